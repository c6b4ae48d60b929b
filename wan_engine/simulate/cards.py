"""Seconds and cost of a video per card: ESTIMATES from the work, not measurements.

Work: the FLOPs of each phase as the simulated card counted them (``FLOPS``, from
``bench/calibrate_simulation.py``; other sizes scale the DiT's linear part with the tokens and its
attention with their square, the encoders and the VAE with the pixels), the bytes a streamed plan
copies over PCIe per DiT evaluation, and the set's bytes read from the volume on the first load.
Cards: peak dense tensor FLOPs from the makers' data sheets, PCIe generation, price per hour from
prices.py (no listed price: no cost). ``EFFICIENCY`` is the stated fraction of peak each kind of
work reaches; ``bench/gpu_check.py`` measures it on a real card.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import prices
from ..load import footprint
from ..load import plan as memplan


@dataclass(frozen=True)
class Card:
    name: str
    vram_gb: float
    bf16_tflops: float        # dense tensor-core peak, FP32 accumulate
    fp8_tflops: float | None  # None: no fp8 tensor cores
    pcie_gbps: float          # usable host->device copy rate, GB/s (gen 4 x16 ~25, gen 5 ~50)
    price_name: str           # the name prices.py matches


CARDS = (
    Card("RTX 3060 12GB", 12, 25.6, None, 25, "RTX 3060"),
    Card("RTX A4000 16GB", 16, 76.7, None, 25, "RTX A4000"),
    Card("L4 24GB", 24, 121, 242, 25, "L4"),
    Card("RTX 4090 24GB", 24, 165, 330, 25, "RTX 4090"),
    Card("RTX 5090 32GB", 32, 209, 419, 50, "RTX 5090"),
    Card("L40S 48GB", 48, 362, 733, 25, "L40S"),
    Card("RTX A6000 48GB", 48, 155, None, 25, "RTX A6000"),
    Card("A100 80GB", 80, 312, None, 25, "A100"),
    Card("H100 SXM 80GB", 80, 989, 1979, 50, "H100"),
    Card("H200 141GB", 141, 989, 1979, 50, "H200"),
)
# fraction of the bf16 peak reached (stated, to be measured): big GEMMs and flash attention; the
# encoders (short sequences); the VAE (3-D convolutions and memory-bound norms)
EFFICIENCY = {"sample": 0.45, "encode": 0.30, "decode": 0.25}
VOLUME_GBPS = 0.5           # network volume read for the first load (stated)
WORKFLOWS = {"fast": (4, 1.0), "quality": (40, 5.0)}   # steps, cfg (cfg > 1: two DiT calls a step)
# measured on the simulated card (bench/calibrate_simulation.py): per DiT evaluation, the encode
# phase with cfg (two prompts), the decode in whole frames; by latent tokens / pixels
FLOPS = {(832, 480, 81): {"eval": 1.684e15, "encode": 1.74e14, "decode": 2.75e14},
         (1280, 720, 81): {"eval": 6.55e15, "encode": 3.92e14, "decode": 9.71e14}}   # decode: 512 px tiles


def work(width: int, height: int, frames: int) -> dict[str, float]:
    """FLOPs of one DiT evaluation, the encode and the decode at this size (scaled from FLOPS)."""
    if (width, height, frames) in FLOPS:
        return FLOPS[(width, height, frames)]
    (w0, h0, f0), ref = next(iter(FLOPS.items()))
    t, t0 = footprint.latent_tokens(width, height, frames), footprint.latent_tokens(w0, h0, f0)
    r, px = t / t0, (width * height * frames) / (w0 * h0 * f0)
    linear = ref["eval"] * LINEAR_SHARE
    return {"eval": linear * r + (ref["eval"] - linear) * r * r, "encode": ref["encode"] * px,
            "decode": ref["decode"] * px}


# share of the DiT's FLOPs in its linear layers at 832x480x81 (the rest is attention, ~tokens^2):
# the two measured sizes solved for a x tokens + b x tokens^2
LINEAR_SHARE = 0.476


@dataclass
class Estimate:
    card: Card
    plan: memplan.Plan
    seconds: dict[str, float]          # workflow -> seconds per video
    phase_seconds: dict[str, float]    # quality workflow, per phase
    stream_gb_per_eval: float
    first_load_s: float

    def usd(self, workflow: str) -> float | None:
        price = prices.gpu_price_per_hour(self.card.price_name)
        return None if price is None else self.seconds[workflow] * price / 3600

    def to_dict(self) -> dict:
        return {"card": self.card.name, "vram_gb": self.card.vram_gb, "plan": self.plan.mode,
                "fits": self.plan.fits, "resident_blocks": self.plan.resident_blocks,
                "decode_tile": self.plan.decode_tile, "estimated": True,
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
                "usd": {k: (None if self.usd(k) is None else round(self.usd(k), 4)) for k in WORKFLOWS},
                "quality_phase_seconds": {k: round(v, 1) for k, v in self.phase_seconds.items()},
                "pcie_gb_per_dit_eval": round(self.stream_gb_per_eval, 2),
                "first_load_seconds": round(self.first_load_s),
                "price_per_hour": prices.gpu_price_per_hour(self.card.price_name)}


def estimate(card: Card, counted, width: int, height: int, frames: int, precision: str = "bf16",
             reserve: int = memplan.DEFAULT_RESERVE) -> Estimate:
    plan = memplan.plan_for(counted, memplan.usable_vram(int(card.vram_gb * 2**30), reserve),
                            width, height, frames, precision=precision)
    weights = counted.weights(precision, fp8=plan.fp8_storage)
    w = work(width, height, frames)
    peak = card.bf16_tflops * 1e12
    streamed = 0.0
    if plan.mode.endswith("block"):
        streamed = (weights.blocks - plan.resident_blocks) * weights.block_bytes / 1e9
    elif plan.mode == "sequential":
        streamed = weights.transformer / 1e9
    per_eval = max(w["eval"] / (peak * EFFICIENCY["sample"]), streamed / card.pcie_gbps)
    fixed = {"encode": w["encode"] / (peak * EFFICIENCY["encode"]),
             "decode": w["decode"] / (peak * EFFICIENCY["decode"])}
    seconds, phases = {}, {}
    for name, (steps, cfg) in WORKFLOWS.items():
        evals = steps * (2 if cfg > 1 else 1)
        phases = {"encode": fixed["encode"] * (1 if cfg > 1 else 0.5), "sample": evals * per_eval,
                  "decode": fixed["decode"]}
        seconds[name] = sum(phases.values())
    set_bytes = counted.weights(precision).transformer + weights.text_encoder + weights.image_encoder + weights.vae
    return Estimate(card, plan, seconds, phases, streamed, set_bytes / 1e9 / VOLUME_GBPS)


def table(counted, width: int, height: int, frames: int, precision: str = "bf16") -> list[Estimate]:
    """Every card whose plan fits, cheapest fast video first (no listed price last)."""
    fits = [e for e in (estimate(c, counted, width, height, frames, precision) for c in CARDS) if e.plan.fits]
    return sorted(fits, key=lambda e: (e.usd("fast") is None, e.usd("fast") or 0, e.seconds["fast"]))


def text(rows: list[Estimate], set_name: str, size: tuple[int, int, int]) -> str:
    from ..store.progress import table as text_table

    def usd(e: Estimate, wf: str) -> str:
        v = e.usd(wf)
        return "-" if v is None else f"${v:.3f}"
    out = [(e.card.name, e.plan.mode + (f" {e.plan.resident_blocks}/40" if e.plan.mode.endswith("block") else ""),
            f"{e.seconds['fast']:.0f}", usd(e, "fast"), f"{e.seconds['quality']:.0f}", usd(e, "quality"),
            "-" if e.usd("fast") is None else f"{prices.gpu_price_per_hour(e.card.price_name):.2f}")
           for e in rows]
    w, h, f = size
    head = (f"ESTIMATED seconds and cost per video, {set_name} at {w}x{h}x{f} (not measured: FLOPs from "
            f"the simulated card at {EFFICIENCY['sample']:.0%} of the bf16 peak for the DiT, "
            f"{EFFICIENCY['encode']:.0%} encoders, {EFFICIENCY['decode']:.0%} VAE; streamed plans "
            "bounded by PCIe; prices: prices.py)")
    return head + "\n" + text_table(("card", "plan", "fast s", "fast $", "quality s", "quality $", "$/h"), out)
