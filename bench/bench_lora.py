"""LoRA cost per DiT step (0 / 1 / 2 adapters, fused and unfused) and peak RAM of fp8 storage.

    .venv/bin/python bench/bench_lora.py [--steps 3 --rounds 5] [--dim 1024 --layers 16] [--skip-rss]

1. Step time: the tiny DiT (tests' model) on a 3x32x32 latent, one forward per step, for: no
   LoRA ever loaded (the baseline), two adapters loaded but all at strength 0 (a prompt without
   LoRA after one with), 1 and 2 active adapters unfused, and fused. Printed as ratios to the
   baseline of the same run (cases interleaved over ``--rounds``; best of the steps each).
2. Peak RAM while loading a bigger random DiT (default ~0.4 B parameters) from a bf16
   single file and from fp32 diffusers shards, each case in a fresh process: bf16, fp8 storage
   (read straight into fp8), and fp8 cast after a bf16 load (how it worked before). Peak = the
   process's VmHWM above its level after imports (reset through /proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


def _loaded(components):
    import torch
    from diffusers import WanImageToVideoPipeline

    from wan_engine.load.assemble import LoadedPipeline
    from wan_engine.store.find import ModelSet

    comps = dict(components, transformer=copy.deepcopy(components["transformer"]))
    return LoadedPipeline(key=("bench",), model_set=ModelSet(name="tiny", layout="diffusers", root=Path(".")),
                          pipe=WanImageToVideoPipeline(**comps), dtype=torch.float32,
                          device=torch.device("cpu"), offload="none", load_seconds=0.0)


def _inputs():
    import torch

    gen = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, 36, 3, 32, 32, generator=gen), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 512, 4096, generator=gen),
                encoder_hidden_states_image=torch.randn(1, 257, 1280, generator=gen), return_dict=False)


def _time(transformer, steps: int) -> float:
    import torch

    x, best = _inputs(), float("inf")
    with torch.no_grad():
        transformer(**x)                                  # warm-up after a switch
        for _ in range(steps):
            t = time.perf_counter()
            transformer(**x)
            best = min(best, time.perf_counter() - t)
    return best


def bench_steps(steps: int, rounds: int) -> None:
    """Cases interleaved over ``rounds`` (a busy machine slows all cases alike); best step each."""
    import torch
    from safetensors.torch import save_file

    from wan_engine.lora import apply as lora
    from wan_engine import tiny_model

    torch.set_num_threads(1)
    components = tiny_model.build_components(seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    paths = []
    for seed in (7, 8):
        paths.append(tmp / f"lora{seed}.safetensors")
        save_file(tiny_model.make_wan_style_lora(rank=4, seed=seed), str(paths[-1]))
    fresh, loaded = _loaded(components).pipe.transformer, _loaded(components)
    cases = [("2 loaded, all at strength 0", [0.0, 0.0], False), ("1 adapter", [1.0, 0.0], False),
             ("2 adapters", [1.0, 0.8], False), ("1 adapter, fused", [1.0, 0.0], True),
             ("2 adapters, fused", [1.0, 0.8], True), ("no LoRA (after LoRAs)", [], False)]
    best = {name: float("inf") for name in ["no LoRA ever loaded"] + [c[0] for c in cases]}
    for _ in range(rounds):
        best["no LoRA ever loaded"] = min(best["no LoRA ever loaded"], _time(fresh, steps))
        for name, strengths, fuse in cases:
            uses = tuple(lora.LoraUse(str(p), s) for p, s in zip(paths, strengths))
            lora.activate(loaded, uses, fuse=fuse)
            best[name] = min(best[name], _time(loaded.pipe.transformer, steps))
    base = best["no LoRA ever loaded"]
    print(f"DiT step, tiny model (dim 256, 2 blocks, rank-4 LoRAs, 1 thread), best of {rounds}x{steps}")
    print(f"{'case':<30}{'ms/step':>9}{'ratio':>8}")
    for name, t in best.items():
        print(f"{name:<30}{t * 1e3:>9.1f}{t / base:>8.2f}")


CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from pathlib import Path
from wan_engine.load import fp8
from wan_engine.load.layouts import components
import diffusers, accelerate
def hwm():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
paths, how = [Path(p) for p in json.loads(sys.argv[2])], sys.argv[3]
open('/proc/self/clear_refs', 'w').write('5'); before = hwm()
model = components.read_dit(paths, torch.bfloat16, fp8_storage=(how == 'fp8'))
if how == 'fp8 after bf16':
    fp8.enable_fp8_storage(model, torch.bfloat16)
size = sum(p.numel() * p.element_size() for p in model.parameters())
fp8_share = sum(p.numel() for p in model.parameters() if p.dtype == torch.float8_e4m3fn)
print(json.dumps(dict(peak=hwm() - before, size=size, fp8=fp8_share / sum(p.numel() for p in model.parameters()))))
"""


def bench_rss(dim: int, layers: int, root: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from bench_load import make_state_dict
    from wan_engine.load.keymaps import dit

    cfg, sd = make_state_dict(dim, layers)
    params = sum(v.numel() for v in sd.values())
    root.mkdir(parents=True, exist_ok=True)
    single = root / "dit_bf16.safetensors"
    save_file({f"model.diffusion_model.{dit.diffusers_to_wan(k)}": v.to(torch.bfloat16).contiguous()
               for k, v in sd.items()}, str(single))
    del sd
    print(f"\nPeak RAM while loading a random DiT of {params / 1e9:.2f} B parameters "
          f"(dim {dim}, {layers} blocks), bf16 compute")
    print(f"{'source':<20}{'mode':<18}{'model GB':>9}{'peak GB':>9}{'peak/bf16':>10}{'fp8 share':>10}")
    results = {}
    for how in ("bf16", "fp8", "fp8 after bf16"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), json.dumps([str(single)]), how],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        r = results[how] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'bf16 single file':<20}{how:<18}{r['size'] / 1e9:>9.2f}{r['peak'] / 1e9:>9.2f}"
              f"{r['peak'] / results['bf16']['peak']:>10.2f}{r['fp8']:>10.2f}")
    os.unlink(single)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/wanvolume-bench-lora"))
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    bench_steps(args.steps, args.rounds)
    if not args.skip_rss:
        bench_rss(args.dim, args.layers, args.dir)


if __name__ == "__main__":
    main()
