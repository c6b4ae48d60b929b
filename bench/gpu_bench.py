"""GPU benchmark of the full-size Wan2.1 I2V 14B DiT through the pack's sampler loop; cost table.

    .venv/bin/python bench/gpu_bench.py                      # H100/H200: ~6-8 minutes
    .venv/bin/python bench/gpu_bench.py --device cpu --tiny  # smoke test of every code path on a CPU

What it runs: the DiT ALONE (WanTransformer3DModel with the real 14B config, random bf16 weights
created directly on the GPU; nothing is downloaded) inside the pack's denoising loop
(wan_engine/sample/denoise.py, flow-matching Euler, cfg 1 = one DiT evaluation per step) with random
text (512 x 4096) and image (257 x 1280) embeddings. Text/image encoders and the VAE are not
included (they are not what the workflows spend their time on). Timing does not depend on the
weight values. Sections, each skipped when the time budget is spent:
  1. s/step at 480x832x81 per installed attention backend, and at 1280x720x81 (best backend)
  2. s/step with regional compile (480p)
  3. s/step with fp8 storage (the loader's per-layer upcast, 480p), then with the speed option
     fp8_matmul (torch._scaled_mm; compute capability 8.9+)
  4. s/step and peak VRAM per offload mode: none; block (the loader's offload=block: group offload,
     block level, CUDA streams); leaf (group offload per layer, the streamed form of sequential)
Then the README cost table (bench/costs.py) with the measured s/evaluation.
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import costs  # noqa: E402
from wan_engine.load import fp8  # noqa: E402
from wan_engine.sample import denoise, schedules, speed
from wan_engine import tiny_model  # noqa: E402

FULL_DIT = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                added_kv_proj_dim=5120)
SIZES = {"480p": (832, 480, 81), "720p": (1280, 720, 81)}
TINY_SIZES = {"480p": (64, 48, 5), "720p": (80, 48, 5)}
log = logging.getLogger("gpu_bench")


def make_dit(config: dict, device: torch.device, dtype: torch.dtype):
    """Random weights allocated on ``device`` directly (no CPU copy, no fp32 detour)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        dit = WanTransformer3DModel(**config)
    dit = dit.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    return dit.eval()


def conditioning(dit, size: tuple[int, int, int], device: torch.device) -> denoise.Conditioning:
    w, h, frames = size
    t, lh, lw = (frames - 1) // 4 + 1, h // 8, w // 8
    dtype = dit.dtype
    g = torch.Generator(device=device).manual_seed(1)

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device=device, dtype=dt)

    return denoise.Conditioning(prompt_embeds=rnd(1, 512, dit.config.text_dim), negative_embeds=None,
                                image_embeds=rnd(1, 257, dit.config.image_dim),
                                condition=rnd(1, 20, t, lh, lw, dt=torch.float32),
                                latents=rnd(1, 16, t, lh, lw, dt=torch.float32))


def s_per_step(dit, size, device, steps: int) -> float:
    """One warm-up step, then ``steps`` timed steps through the pack's loop."""
    cond = conditioning(dit, size, device)
    warm = schedules.make_stepper("euler", "auto", 1, 5.0, {}, device)
    denoise.denoise(dit, cond, warm, 1.0)
    stepper = schedules.make_stepper("euler", "auto", steps, 5.0, {}, device)
    _sync(device)
    start = time.perf_counter()
    denoise.denoise(dit, cond, stepper, 1.0)
    _sync(device)
    return (time.perf_counter() - start) / steps


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def _reset_peak(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def ok(self, need: float, what: str) -> bool:
        if self.left() < need:
            print(f"  (skipped {what}: {self.left():.0f} s of the budget left, needs ~{need:.0f} s)")
            return False
        return True


def attention_section(dit, sizes, device, steps, budget, results) -> str:
    backends = ["native"] if device.type != "cuda" else [
        b for b in ("native", "_native_cudnn", "_native_flash", "flash", "_flash_3", "sage")
        if speed.installed(speed.ATTENTION_BACKENDS[b][0])]
    best, best_t = "native", float("inf")
    for b in backends:
        if not budget.ok(30, f"attention {b}"):
            break
        try:
            speed.apply_attention(dit, b, device)
            t = s_per_step(dit, sizes["480p"], device, steps)
        except Exception as exc:   # a backend that does not support this GPU: say so, keep going
            print(f"  attention {b}: failed ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        results[("480p", f"attention {b}")] = t
        print(f"  480p attention {b:15s} {t:7.2f} s/step")
        if t < best_t:
            best, best_t = b, t
    speed.apply_attention(dit, best, device)
    if budget.ok(60, "720p"):
        t = s_per_step(dit, sizes["720p"], device, steps)
        results[("720p", f"attention {best}")] = t
        print(f"  720p attention {best:15s} {t:7.2f} s/step")
    return best


def compile_section(dit, sizes, device, steps, budget, results) -> None:
    if not budget.ok(180, "compile"):
        return
    start = time.perf_counter()
    speed.apply_compile(dit, True, device)
    t = s_per_step(dit, sizes["480p"], device, steps)
    results[("480p", "compiled")] = t
    print(f"  480p compiled      {t:7.2f} s/step (compile + warm-up {time.perf_counter() - start:.0f} s)")
    speed.apply_compile(dit, False, device)


def fp8_section(dit, sizes, device, steps, budget, results) -> None:
    if not budget.ok(60, "fp8 storage"):
        return
    fp8.enable_fp8_storage(dit, dit.dtype)          # the pack's per-layer upcast (loader fp8_storage)
    _reset_peak(device)
    t = s_per_step(dit, sizes["480p"], device, steps)
    results[("480p", "fp8 storage")] = t
    print(f"  480p fp8 storage   {t:7.2f} s/step, peak {_peak_gb(device):.1f} GiB")
    reason = fp8.matmul_capable(device)
    if reason or not budget.ok(60, "fp8 matmul"):
        print(f"  480p fp8 matmul    skipped: {reason or 'no time left'}")
        return
    layers = speed.apply_fp8_matmul(dit, True, device)   # speed option fp8_matmul
    _reset_peak(device)
    t = s_per_step(dit, sizes["480p"], device, steps)
    results[("480p", "fp8 matmul")] = t
    print(f"  480p fp8 matmul    {t:7.2f} s/step ({layers} layers), peak {_peak_gb(device):.1f} GiB")
    speed.apply_fp8_matmul(dit, False, device)


def offload_section(config, sizes, device, dtype, budget) -> None:
    """Peak VRAM of one 480p step per offload mode (a fresh DiT each time)."""
    for mode in ("none", "block", "leaf"):
        if not budget.ok(90, f"offload {mode}"):
            return
        _reset_peak(device)
        if mode != "none" and device.type != "cuda":
            print(f"  offload {mode}: needs CUDA, skipped on {device.type}")
            continue
        dit = make_dit(config, device, dtype)   # random values are made fastest on the GPU...
        if mode != "none":
            dit.to("cpu")                       # ...then the weights live in CPU RAM
        if mode == "block":
            dit.enable_group_offload(device, offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        elif mode == "leaf":   # layer by layer, like offload=sequential but with streams
            dit.enable_group_offload(device, offload_type="leaf_level", use_stream=True)
        _reset_peak(device)
        t = s_per_step(dit, sizes["480p"], device, 1)
        print(f"  offload {mode:10s} 480p {t:7.2f} s/step, peak VRAM {_peak_gb(device):.1f} GiB")
        del dit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny DiT and sizes (smoke test)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the sections (default 7.5 min)")
    ap.add_argument("--gpu-name", default=None, help="row of the cost table (default: from the device)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    config = dict(tiny_model.TRANSFORMER_CONFIG) if args.tiny else FULL_DIT
    sizes = TINY_SIZES if args.tiny else SIZES
    dtype = torch.bfloat16
    name = args.gpu_name or (torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    print(f"device {name}; DiT {'tiny' if args.tiny else 'Wan2.1 I2V 14B'} bf16, random weights; "
          f"sizes {sizes}; {args.steps} timed steps after 1 warm-up; the DiT alone in the pack's loop")
    start = time.perf_counter()
    dit = make_dit(config, device, dtype)
    print(f"  DiT created in {time.perf_counter() - start:.0f} s, "
          f"{sum(p.numel() for p in dit.parameters()) / 1e9:.2f} B parameters")
    budget = Budget(args.budget)   # for the sections, after the DiT exists
    results: dict = {}
    best = attention_section(dit, sizes, device, args.steps, budget, results)
    compile_section(dit, sizes, device, args.steps, budget, results)
    fp8_section(dit, sizes, device, args.steps, budget, results)
    del dit
    offload_section(config, sizes, device, dtype, budget)
    gpu = next((g for g in costs.PRICES if g.split()[-1] in name), None)
    measured = {(gpu, res): t for (res, what), t in results.items() if what == f"attention {best}"}
    if gpu and not args.tiny:
        print(f"\nMEASURED (DiT only, attention {best}) beside ESTIMATED and PUBLISHED:\n")
        print(costs.table(measured))
    else:
        print(f"\n(no cost table from measurements: device {name!r} is not one of {list(costs.PRICES)} or "
              "--tiny; the estimated table is `python bench/costs.py`)")


if __name__ == "__main__":
    main()
