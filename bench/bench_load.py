"""Load time and peak RAM of the DiT from each layout, against plain sequential file reads.

    .venv/bin/python bench/bench_load.py [--dim 1536 --layers 10] [--dir /tmp/wanvolume-bench] [--only fp8]

Writes one random Wan I2V transformer (default ~0.5 B parameters: 2 GB fp32, 1 GB bf16) in
each layout, then for each layout, in a fresh process and with the files evicted from the page
cache first: (a) reads the files with plain large reads, (b) loads the DiT in bf16, --repeat
times, interleaved. Prints the median ratio load/read of the pairs (1.0 = loading costs no more
than reading the bytes) with its range, and peak RSS of the first load over the loaded size
(1.0 = no copy besides the model itself). Both measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def make_state_dict(dim: int, layers: int):
    import torch
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=dim // 128, attention_head_dim=128,
               in_channels=36, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=dim * 4,
               num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
               image_dim=1280, added_kv_proj_dim=dim)
    with init_empty_weights():
        model = WanTransformer3DModel(**cfg)
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in model.state_dict().items()}
    return cfg, sd


def write_all(root: Path, dim: int, layers: int, only: str = "") -> dict[str, list[Path]]:
    import layout_writers as lw
    import torch
    from safetensors.torch import save_file

    from wan_engine.load.keymaps import dit

    cfg, sd = make_state_dict(dim, layers)
    out: dict[str, list[Path]] = {}

    def shards(folder: Path, tensors: dict, n: int, stem: str) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        keys, paths, wmap = sorted(tensors), [], {}
        for i in range(n):
            name = f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
            save_file({k: tensors[k].contiguous() for k in keys[i::n]}, str(folder / name))
            wmap.update({k: name for k in keys[i::n]})
            paths.append(folder / name)
        (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
        return paths

    def wanted(name: str) -> bool:
        return only in name

    tdir = root / "diffusers" / "transformer"
    if wanted("diffusers fp32 shards"):
        out["diffusers fp32 shards"] = shards(tdir, sd, 4, "diffusion_pytorch_model")
        (tdir / "config.json").write_text(json.dumps(dict(cfg, _class_name="WanTransformer3DModel")))
    wan = {dit.diffusers_to_wan(k): v for k, v in sd.items()}
    if wanted("wan fp32 shards"):
        out["wan fp32 shards"] = shards(root / "wan", wan, 4, "diffusion_pytorch_model")
    comfy = root / "comfy"
    comfy.mkdir(parents=True, exist_ok=True)
    if wanted("comfy bf16 file"):
        save_file({f"model.diffusion_model.{k}": v.to(torch.bfloat16) for k, v in wan.items()},
                  str(comfy / "dit_bf16.safetensors"))
        out["comfy bf16 file"] = [comfy / "dit_bf16.safetensors"]
    if wanted("comfy fp8_scaled file"):
        scaled = lw.comfy_dit_from_wan(wan, "fp8_scaled")
        save_file(scaled, str(comfy / "dit_fp8_scaled.safetensors"))
        out["comfy fp8_scaled file"] = [comfy / "dit_fp8_scaled.safetensors"]
    os.sync()
    return out


CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from pathlib import Path
from wan_engine.load import fastload
from wan_engine.load.layouts import components
from diffusers import WanTransformer3DModel   # imports (seconds) are not part of loading
import accelerate, wan_engine.load.layouts.build
paths = [Path(p) for p in json.loads(sys.argv[2])]
how = sys.argv[3]
def evict():
    for p in paths:
        with open(p, 'rb') as fh:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
def hwm():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
def load():
    if how == 'from_pretrained':
        return WanTransformer3DModel.from_pretrained(str(paths[0].parent), dtype=torch.bfloat16)
    return components.read_dit(paths, torch.bfloat16)
plains, loads, peak, warm = [], [], None, []
for _ in range(int(sys.argv[4])):   # interleaved, cold each time: a disk's drift hits both alike
    evict(); t = time.perf_counter(); nbytes = fastload.read_plain(paths); plains.append(time.perf_counter() - t)
    evict(); open('/proc/self/clear_refs', 'w').write('5'); before = hwm()
    t = time.perf_counter(); model = load(); loads.append(time.perf_counter() - t)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = (hwm() - before) / size if peak is None else peak   # the first load: nothing cached yet
    del model
for _ in range(3):   # from the page cache: what loading costs when the disk is not the limit
    t = time.perf_counter(); load(); warm.append(time.perf_counter() - t)
med = lambda v: sorted(v)[len(v) // 2]
ratios = sorted(l / p for l, p in zip(loads, plains))
print(json.dumps(dict(bytes=nbytes, plain=med(plains), load=med(loads), ratio=med(ratios),
                      ratio_range=[ratios[0], ratios[-1]], peak=peak, size=size, warm=min(warm))))
"""


def measure(paths: list[Path], how: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), json.dumps([str(p) for p in paths]),
                          how, str(repeat)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/wanvolume-bench"))
    ap.add_argument("--only", default="", help="only the layouts whose name contains this (e.g. fp8)")
    ap.add_argument("--repeat", type=int, default=5, help="cold read + cold load pairs per layout (medians)")
    args = ap.parse_args()
    t = time.perf_counter()
    layouts = write_all(args.dir, args.dim, args.layers, args.only)
    print(f"wrote layouts in {time.perf_counter() - t:.0f} s under {args.dir}")
    print(f"{'layout':<34}{'file GB':>8}{'read s':>8}{'MB/s':>7}{'load s':>8}{'load/read':>10}"
          f"{'(min-max)':>12}{'peak RSS/loaded':>16}{'cached load MB/s':>17}")
    runs = [(name, paths, "fastload") for name, paths in layouts.items()]
    if "diffusers fp32 shards" in layouts:
        runs.append(("diffusers fp32 shards (from_pretrained)", layouts["diffusers fp32 shards"],
                     "from_pretrained"))
    for name, paths, how in runs:
        r = measure(paths, how, args.repeat)
        spread = f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}"
        print(f"{name:<34}{r['bytes'] / 1e9:>8.2f}{r['plain']:>8.2f}{r['bytes'] / r['plain'] / 1e6:>7.0f}"
              f"{r['load']:>8.2f}{r['ratio']:>10.2f}{spread:>12}{r['peak']:>16.2f}"
              f"{r['bytes'] / r['warm'] / 1e6:>17.0f}")
    if not args.only or "fp8" in args.only:
        conversion_rates()


def conversion_rates() -> None:
    """fp8 -> bf16 x scale at the loader's slice size: torch's cast, the table, the bit move."""
    import bench_fp8_upcast

    bench_fp8_upcast.main(["--device", "cpu", "--sizes", "33554432", "--pairs", "e4m3fn:bf16:scaled"])


if __name__ == "__main__":
    main()
