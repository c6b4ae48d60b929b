"""GPU check for the spine: the tiny volume end to end on CUDA in bf16, once per offload mode,
plus a sampler run at 480x832 x 17 frames. Prints timings and peak VRAM per run. Then the memory
check: the set under ComfyUI's memory manager, evicted by "another node" (mm.free_memory for a
big allocation), seen on the offload device, and brought back from RAM without a volume read.

CPU tests cannot see device-placement or dtype mistakes; this does. On a lent GPU machine:
    .venv/bin/python bench/gpu_check.py            # ~1-2 minutes on an H100
It also runs on the CPU as a smoke test (--device cpu, smaller sizes; --memory-only for the
memory check alone).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from wan_engine.load import assemble
from wan_engine.sample import decode, sampling
from wan_engine.lora import apply as lora
from wan_engine import tiny_model, video
from wan_engine.store import find as volume  # noqa: E402


def run_once(model_set, offload: str, size: tuple[int, int, int], lora_path: Path, out_dir: Path,
             device: str) -> dict:
    w, h, frames = size
    assemble.release()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loaded = assemble.load(model_set, "bf16", offload)
    t_load = time.perf_counter() - t0
    lora.activate(loaded, (lora.LoraUse(str(lora_path), 1.0),))
    image = Image.open(Path(__file__).resolve().parent.parent / "assets" / "two_people.png")
    req = sampling.SampleRequest(prompt="two people smile, then they engage in k144ing kissing.",
                                 width=w, height=h, frames=frames, steps=4, seed=1,
                                 tiles=decode.TileSettings(True, 256, 64))
    t1 = time.perf_counter()
    out = sampling.sample(loaded, image, req)
    t_sample = time.perf_counter() - t1
    path = video.write_video(out, out_dir / f"{offload}_{w}x{h}x{frames}.mp4")
    facts = video.probe(path)
    return {
        "offload": offload, "size": f"{w}x{h}x{frames}", "device": str(loaded.device),
        "transformer_dtype": str(loaded.pipe.transformer.dtype), "vae_dtype": str(loaded.pipe.vae.dtype),
        "load_s": round(t_load, 2), "sample_s": round(t_sample, 2),
        "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None,
        "finite": bool(np.isfinite(out).all()), "video": [facts.frames, facts.width, facts.height, facts.fps],
    }


def comfy_mm(device: str):
    """ComfyUI's model_management, set up as `main.py` (with --cpu on the CPU) would."""
    sys.path.insert(0, str(REPO / "scripts"))
    import comfy_headless

    comfy_headless.import_comfyui()
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"
    import comfy.model_management as mm

    return mm


def memory_check(model_set, device: str) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    from pack import pack_module

    memory = pack_module("nodes.memory")

    mm = comfy_mm(device)
    dev = mm.get_torch_device()
    assemble.release()
    loaded = assemble.load(model_set, "bf16", memory.effective_offload("none"), device=dev,
                           placement=memory.ComfyPlacement())
    where = lambda: str(loaded.pipe.transformer.device)   # noqa: E731
    out = {"check": "memory", "vram_state": mm.vram_state.name, "after_load": where()}
    memory.make_room(loaded, 128, 80, 9)
    out["after_make_room"] = where()
    out["registered"] = sum(type(m.model.model).__name__ == "WanComponent" for m in mm.current_loaded_models)
    need = mm.get_total_memory(dev)                         # "another node" wants the whole device
    mm.free_memory(need, dev)
    out["after_free_memory"] = where()
    out["registered_after_free"] = sum(type(m.model.model).__name__ == "WanComponent"
                                       for m in mm.current_loaded_models)
    if dev.type == "cuda":
        big = torch.empty(int(mm.get_free_memory(dev) * 0.8), dtype=torch.uint8, device=dev)
        out["other_node_gib"] = round(big.numel() / 2**30, 1)
        del big
        torch.cuda.empty_cache()
    memory.make_room(loaded, 128, 80, 9)
    out["after_second_make_room"] = where()
    out["volume_reads"] = int(assemble.resident() is not loaded)   # a new set means the volume was read again
    out["ok"] = (not loaded.dropped and out["volume_reads"] == 0 and out["registered"] > 0
                 and out["registered_after_free"] == 0
                 and (dev.type == "cpu" or (out["after_make_room"].startswith("cuda")
                                            and out["after_free_memory"] == "cpu"
                                            and out["after_second_make_room"].startswith("cuda"))))
    assemble.release()
    return out


CAPS_GB = (24, 48, 80)


def full_size(loaded, device: str) -> None:
    """Swap the tiny modules for the real 14B shapes with random weights (bf16 DiT and umT5,
    fp32 CLIP and VAE), built straight on ``device``; tokenizer and scheduler stay."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel
    from wan_engine.load import sizes

    cfg = lambda f: {k: v for k, v in json.loads((sizes.CONFIGS / f).read_text()).items()  # noqa: E731
                     if not k.startswith("_")}
    pipe = loaded.pipe
    with torch.device(device):
        pipe.transformer = WanTransformer3DModel(**cfg("transformer_i2v_14b.json")).to(torch.bfloat16)
        pipe.text_encoder = UMT5EncoderModel(UMT5Config(**sizes.UMT5_XXL)).to(torch.bfloat16)
        pipe.image_encoder = CLIPVisionModel(CLIPVisionConfig(**sizes.CLIP_VIT_H))
        pipe.vae = AutoencoderKLWan(**cfg("vae_wan21.json"))
    pipe.image_processor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    for m in (pipe.transformer, pipe.text_encoder, pipe.image_encoder, pipe.vae):
        m.to("cpu")


def plan_phase_hook(loaded, chosen, device: torch.device):
    """The plan's placement without ComfyUI: each phase moves the parts it places on the GPU."""
    import contextlib

    from wan_engine.sample.phases import COMPONENTS
    names = {"text_encode": "encode", "image_encode": "encode", "sample": "sample", "decode": "decode"}

    @contextlib.contextmanager
    def phase(name: str):
        planned = chosen.phase(names[name]).components
        for part, where in planned.items():
            module = getattr(loaded.pipe, part)
            if part == "transformer" and chosen.offload != "none":
                continue                               # diffusers' hooks move it
            if where.device == "cpu" and part not in COMPONENTS[name]:
                module.to("cpu")
        for part in COMPONENTS[name]:
            if not (part == "transformer" and chosen.offload != "none"):
                getattr(loaded.pipe, part).to(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        yield
    return phase


def simulated(chosen, peak: int, steps: list[float]) -> dict:
    """The same plan on the simulated card (wan_engine/simulate): its peak next to the measured one,
    and the DiT's FLOPs per step over the measured seconds (the achieved TFLOPS that
    simulate/cards.py's EFFICIENCY stands for)."""
    from wan_engine.simulate import run
    sim = run.simulate(chosen, steps=1)
    sim_peak = max(m.peak_bytes for m in sim.phases.values())
    flops = sim.phases["sample"].flops      # one step, cond and uncond
    return {"simulated_peak_gib": round(sim_peak / 2**30, 2),
            "measured_over_simulated_peak": round(peak / sim_peak, 3) if peak else None,
            "achieved_tflops": round(flops / steps[-1] / 1e12, 1) if steps else None}


def plan_check(model_set, device: str, tiny: bool) -> list[dict]:
    """Per cap: the plan for 832x480x81, 2 steps + decode under that cap; peak vs the plan."""
    from wan_engine.load import fp8, plan as memplan, sizes
    dev = torch.device(device)
    size = (64, 48, 5) if tiny else (832, 480, 81)
    out = []
    for cap in CAPS_GB:
        assemble.release()
        loaded = assemble.load(model_set, "bf16", "none", device=torch.device("cpu"))
        loaded.device = dev
        counted = sizes.from_model_set(model_set) if tiny else sizes.reference("wan2.1-i2v-14b-480p")
        if not tiny:
            full_size(loaded, device)
        vram = memplan.usable_vram(cap * 2**30)
        chosen = memplan.plan_for(counted, vram, *size, precision="bf16")
        if chosen.fp8_storage:
            fp8.enable_fp8_storage(loaded.pipe.transformer, torch.bfloat16)
        if chosen.offload == "block":
            assemble.stream_transformer(loaded.pipe.transformer, dev, chosen.resident_blocks)
        elif chosen.offload == "sequential" and dev.type == "cuda":
            loaded.pipe.enable_sequential_cpu_offload(device=dev)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / torch.cuda.get_device_properties(0).total_memory))
            torch.cuda.reset_peak_memory_stats()
        image = Image.open(REPO / "assets" / "two_people.png")
        req = sampling.SampleRequest(prompt="two people kiss", width=size[0], height=size[1], frames=size[2],
                                     steps=2, seed=1, tiles=decode.tiles_for(chosen.decode_tile),
                                     encode_tile=chosen.encode_tile)
        steps: list[float] = []
        t = [time.perf_counter()]

        def on_step(*_):
            steps.append(time.perf_counter() - t[0])
            t[0] = time.perf_counter()
        frames = sampling.sample(loaded, image, req, on_step=on_step, phase=plan_phase_hook(loaded, chosen, dev))
        peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0
        row = {"check": "plan", "cap_gb": cap, "plan": chosen.summary(), "plan_peak_gib": round(chosen.peak_bytes / 2**30, 2),
               "peak_gib": round(peak / 2**30, 2), "s_per_step": round(steps[-1], 2) if steps else None,
               "finite": bool(np.isfinite(frames).all())}
        if not tiny:
            row.update(simulated(chosen, peak, steps))
        row["ok"] = row["finite"] and (dev.type != "cuda" or (peak <= cap * 2**30 and
                                                             abs(peak - chosen.peak_bytes) <= 0.1 * chosen.peak_bytes))
        out.append(row)
        print(json.dumps(row), flush=True)
        if dev.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)
        del loaded, frames
        assemble.release()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--memory-only", action="store_true", help="only the ComfyUI memory-manager check")
    ap.add_argument("--plan", action="store_true",
                    help="only the memory-plan check: the 14B shapes (random weights) under 24/48/80 GB "
                         "caps at 832x480x81, 2 steps + decode (with --tiny: the tiny set, CPU smoke)")
    ap.add_argument("--tiny", action="store_true", help="with --plan: the tiny set instead of 14B shapes")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    print("torch", torch.__version__, "cuda", torch.version.cuda,
          torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", flush=True)
    work = Path(tempfile.mkdtemp(prefix="wanvolume-gpu-"))
    tiny_model.ensure_demo_set(work)
    lora_path = tiny_model.ensure_demo_lora(work)
    import os
    os.environ["WAN_VOLUME_MODELS_DIR"] = str(work)
    model_set = volume.get_model_set(tiny_model.TINY_SET_NAME)
    if args.plan:
        rows = plan_check(model_set, args.device, args.tiny)
        ok = all(r["ok"] for r in rows)
        print("OK" if ok else "FAILED")
        return 0 if ok else 1
    small = (128, 80, 9)
    big = (832, 480, 17) if args.device == "cuda" else (256, 160, 9)
    results = []
    for offload in () if args.memory_only else ("none", "model", "sequential"):
        results.append(run_once(model_set, offload, small, lora_path, work, args.device))
        print(json.dumps(results[-1]), flush=True)
    if not args.memory_only:
        results.append(run_once(model_set, "none", big, lora_path, work, args.device))
        print(json.dumps(results[-1]), flush=True)
    ok = all(r["finite"] and r["video"][0] == int(r["size"].split("x")[2]) for r in results)
    mem = memory_check(model_set, args.device)
    print(json.dumps(mem), flush=True)
    ok = ok and mem["ok"]
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
