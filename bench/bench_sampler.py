"""The pack's sampler against plain diffusers, and DiT evaluations per video of every shipped workflow.

    .venv/bin/python bench/bench_sampler.py [--repeats 5]

(1) Per-step time, CPU, one run, side by side: the pack's loop (wan_engine/sample/denoise.py, UniPC,
    the same work as the full workflows) vs diffusers' WanImageToVideoPipeline on the same small
    random model. A step is the time between two step-end callbacks (the pack's on_step,
    diffusers' callback_on_step_end), so encoding and decoding are not in it; the median over
    interleaved runs of 5 steps. Goal: ratio <= 1.05.
(2) DiT evaluations per video: each workflow in workflows/api/ run with its own sampler, schedule,
    steps and cfg on the tiny model (small frames), counting the DiT's forward calls with a hook.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from wan_engine.load import assemble
from wan_engine.sample import denoise, sampling, schedules
from wan_engine import tiny_model  # noqa: E402

SMALL_DIT = dict(tiny_model.TRANSFORMER_CONFIG, num_attention_heads=4, num_layers=4, ffn_dim=1024,
                 added_kv_proj_dim=512)
SIZE = dict(width=160, height=96, frames=9)
PROMPT = "two people smile, then they engage in k144ing kissing."


def small_pipeline():
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    parts = tiny_model.build_components(seed=0)
    torch.manual_seed(1)
    parts["transformer"] = WanTransformer3DModel(**SMALL_DIT)
    return WanImageToVideoPipeline(**parts).to("cpu")


def steps_plain(pipe, image, steps: int) -> list[float]:
    """Seconds between consecutive step ends of diffusers' own loop (callback_on_step_end)."""
    from diffusers import UniPCMultistepScheduler

    stamps = []

    def on_end(_pipe, _i, _t, _kw):
        stamps.append(time.perf_counter())
        return {}

    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=5.0)
    pipe(image=image, prompt=PROMPT, negative_prompt="low quality", height=SIZE["height"], width=SIZE["width"],
         num_frames=SIZE["frames"], num_inference_steps=steps, guidance_scale=5.0,
         generator=torch.Generator().manual_seed(0), output_type="latent", max_sequence_length=512,
         callback_on_step_end=on_end)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def steps_pack(pipe, image, steps: int) -> list[float]:
    """The same intervals in the pack's loop (its on_step callback)."""
    stamps = []
    cond = denoise.prepare(pipe, image, PROMPT, "low quality", SIZE["width"], SIZE["height"], SIZE["frames"],
                           5.0, 0)
    stepper = schedules.make_stepper("unipc", "auto", steps, 5.0, pipe.scheduler.config, torch.device("cpu"))
    denoise.denoise(pipe.transformer, cond, stepper, 5.0, on_step=lambda *_: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def per_step(repeats: int) -> tuple[float, float]:
    """Median step time of each, runs interleaved so machine load hits both alike."""
    pipe = small_pipeline()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE["height"], SIZE["width"], 3),
                                                              dtype=np.uint8))
    pack, plain = [], []
    for _ in range(repeats):
        pack += steps_pack(pipe, image, 5)
        plain += steps_plain(pipe, image, 5)
    return statistics.median(pack), statistics.median(plain)


def evaluations_per_workflow(models_dir: Path) -> list[tuple[str, dict, int]]:
    s = tiny_model.ensure_demo_set(models_dir)
    from wan_engine.store.find import ModelSet

    loaded = assemble.load(ModelSet(tiny_model.TINY_SET_NAME, "diffusers", s, {"root": s}), "fp32")
    image = Image.new("RGB", (64, 48), "gray")
    out = []
    for path in sorted((REPO / "workflows" / "api").glob("kiss_*.json")):   # Wan2.1 (the tiny set)
        wf = json.loads(path.read_text())
        inp = next(n["inputs"] for n in wf.values() if n["class_type"] == "WanVolumeSampler")
        req = sampling.SampleRequest(prompt=PROMPT, width=64, height=48, frames=5, steps=inp["steps"],
                                     cfg=inp["cfg"], shift=inp["shift"], sampler=inp.get("sampler", "unipc"),
                                     schedule=inp.get("schedule", "auto"))
        count = [0]
        handle = loaded.pipe.transformer.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        try:
            sampling.sample(loaded, image, req)
        finally:
            handle.remove()
        out.append((path.stem, inp, count[0]))
    assemble.release()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/wanvolume-bench-sampler"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pack, plain = per_step(args.repeats)
    print(f"per-step time, small DiT ({SMALL_DIT['num_layers']} layers, dim "
          f"{SMALL_DIT['num_attention_heads'] * 128}), {SIZE['width']}x{SIZE['height']}x{SIZE['frames']}, "
          f"UniPC, cfg 5, CPU, median of {args.repeats} interleaved runs x 4 step intervals:")
    print(f"  pack loop {pack * 1000:.1f} ms/step   diffusers pipeline {plain * 1000:.1f} ms/step   "
          f"ratio {pack / plain:.3f} (goal <= 1.05)\n")
    print("| workflow | sampler | schedule | steps | cfg | DiT evaluations (counted) |")
    print("|---|---|---|---|---|---|")
    for stem, inp, n in evaluations_per_workflow(args.dir / "models"):
        print(f"| {stem} | {inp.get('sampler', 'unipc')} | {inp.get('schedule', 'auto')} | {inp['steps']} | "
              f"{inp['cfg']:g} | {n} |")


if __name__ == "__main__":
    main()
