"""Cost per video: stated GPU prices, LightX2V's published timings, FLOP estimates, the one-cent goal.

    .venv/bin/python bench/costs.py          # the ESTIMATED table (no GPU needed)

bench/gpu_bench.py prints the same table from its measured s/step. Every figure here that is
not measured by this pack is labelled: "published" (LightX2V's benchmark, Wan2.1 I2V 14B, 81
frames) or "estimated" (FLOP count / achieved throughput).
"""
from __future__ import annotations

# $/h on RunPod-style clouds, stated (community-cloud list prices; they change).
PRICES = {"H100": 2.99, "H200": 3.59, "RTX 4090": 0.69}
GOAL_USD = 0.01
# LightX2V's published seconds per video (81 frames): (480p, 720p).
PUBLISHED = {
    ("H200", "full"): (366, 974),       # official code, 40 steps with CFG
    ("H200", "fast"): (14, 44),         # 4-step distill, no CFG
    ("RTX 4090", "full"): (738, 2473),  # fp8 + offload
    ("RTX 4090", "fast"): (68, 183),
}
WORKFLOWS = {"fast": (4, 1), "full": (40, 2)}   # steps, DiT evaluations per step
TOKENS = {"480p": 32_760, "720p": 75_600}       # 81 frames -> 21 latent frames, 2x2 patches
LINEAR_FLOP_720P, ATTN_FLOP_720P = 2.1e15, 4.7e15   # per DiT forward at 720p (REFERENCE.md 7)
ACHIEVED_TFLOPS = {"H100": 700.0, "H200": 700.0, "RTX 4090": 150.0}   # bf16, assumed


def flop_per_eval(res: str) -> float:
    """Linear layers scale with tokens, attention with tokens squared."""
    r = TOKENS[res] / TOKENS["720p"]
    return LINEAR_FLOP_720P * r + ATTN_FLOP_720P * r * r


def estimated_seconds(gpu: str, workflow: str, res: str) -> float:
    """DiT time only, from the FLOP count at an assumed achieved throughput (ESTIMATED)."""
    steps, per_step = WORKFLOWS[workflow]
    return steps * per_step * flop_per_eval(res) / (ACHIEVED_TFLOPS[gpu] * 1e12)


def usd(seconds: float, gpu: str) -> float:
    return seconds * PRICES[gpu] / 3600.0


def rows(measured_s_per_eval: dict[tuple[str, str], float] | None = None) -> list[dict]:
    """One row per GPU x workflow x resolution. ``measured_s_per_eval[(gpu, res)]`` adds the
    measured column (s per DiT evaluation, from gpu_bench.py)."""
    out = []
    for gpu in PRICES:
        for wf in WORKFLOWS:
            for i, res in enumerate(TOKENS):
                pub_gpu = "H200" if gpu == "H100" else gpu   # H100: H200's published figure (same bf16 peak)
                pub = PUBLISHED.get((pub_gpu, wf), (None, None))[i]
                est = estimated_seconds(gpu, wf, res)
                row = dict(gpu=gpu, workflow=wf, res=res, evals=WORKFLOWS[wf][0] * WORKFLOWS[wf][1],
                           est_s=est, est_usd=usd(est, gpu), pub_s=pub,
                           pub_usd=None if pub is None else usd(pub, gpu))
                if measured_s_per_eval and (gpu, res) in measured_s_per_eval:
                    row["meas_s"] = measured_s_per_eval[(gpu, res)] * row["evals"]
                    row["meas_usd"] = usd(row["meas_s"], gpu)
                out.append(row)
    return out


def table(measured: dict[tuple[str, str], float] | None = None) -> str:
    def money(v):
        return "-" if v is None else f"${v:.3f}"

    def secs(v):
        return "-" if v is None else f"{v:.0f} s"

    head = ["GPU ($/h)", "workflow", "res", "DiT evals", "estimated DiT s", "estimated $",
            "LightX2V published s", "$ at that time"]
    if measured:
        head += ["measured s (DiT)", "measured $"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(measured):
        cells = [f"{r['gpu']} (${PRICES[r['gpu']]:.2f})", r["workflow"], r["res"], str(r["evals"]),
                 secs(r["est_s"]), money(r["est_usd"]), secs(r["pub_s"]), money(r["pub_usd"])]
        if measured:
            cells += [secs(r.get("meas_s")), money(r.get("meas_usd"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nGoal: ${GOAL_USD:.2f} per video = {GOAL_USD / PRICES['H200'] * 3600:.0f} s of an H200, "
                 f"{GOAL_USD / PRICES['H100'] * 3600:.0f} s of an H100, "
                 f"{GOAL_USD / PRICES['RTX 4090'] * 3600:.0f} s of a 4090.")
    lines.append("estimated = DiT only: FLOPs per evaluation (linear ~ tokens, attention ~ tokens^2; "
                 f"{LINEAR_FLOP_720P:.1e} + {ATTN_FLOP_720P:.1e} at 720p) / assumed achieved bf16 "
                 f"throughput ({', '.join(f'{g} {t:.0f} TFLOP/s' for g, t in ACHIEVED_TFLOPS.items())}); "
                 "text/image encoding and VAE decode not included. published = LightX2V's benchmark "
                 "(H200 figures used for the H100; 4090 figures with fp8 + offload).")
    return "\n".join(lines)


if __name__ == "__main__":
    print("ESTIMATED cost per video (no GPU measurement in this table)\n")
    print(table())
