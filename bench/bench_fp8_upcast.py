"""fp8 -> wider float (x scale): torch's cast, the 256-entry table and the bit move, side by side.

    .venv/bin/python bench/bench_fp8_upcast.py [--sizes 262144,4194304,33554432] [--rounds 5]
                                               [--device cpu|cuda|all] [--pairs e4m3fn:bf16:scaled,...]

For each device (all: the CPU, and CUDA when present), dtype pair and size: the same fp8 values
(random weights, N(0, 0.05) rounded to fp8; x 0.0123 where scaled) converted by each path, the
paths interleaved and rotated each round. Prints each path's median M values/s and its ratio to
torch's cast (the baseline; median of the per-round ratios, min-max), checks every path's output
bit for bit against the cast's (it stops if one differs), and puts the fastest path measured next
to the one the loader's calibration (wan_engine/load/upcast.py: 16 K and 256 K values, once per
process) picks for that size in this process on the same machine. 33554432 values (32 MB of fp8)
is the slice the loader converts at a time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_engine.load import upcast  # noqa: E402

DTYPES = {"e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "bf16": torch.bfloat16,
          "fp16": torch.float16, "fp32": torch.float32}
PAIRS = "e4m3fn:bf16:scaled,e4m3fn:bf16,e4m3fn:fp16:scaled,e4m3fn:fp32:scaled,e5m2:bf16:scaled"
SIZES = "262144,4194304,33554432"


def rates(src: torch.Tensor, dst: torch.dtype, scale: torch.Tensor | None, rounds: int) -> dict:
    """Per path: median values/s, and the per-round ratios to torch's cast; outputs checked."""
    measure = upcast.timer(src.device)
    expected = torch.empty(src.numel(), dtype=dst, device=src.device)
    upcast.run_path("cast", src, expected, scale)
    names = [n for n in upcast.PATHS if upcast.run_path(n, src[:256], torch.empty(256, dtype=dst, device=src.device),
                                                        scale)]
    out = torch.empty_like(expected)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(measure(name, src.numel(), lambda n=name: upcast.run_path(n, src, out, scale)))
            if r == 0 and not torch.equal(upcast.as_bits(out), upcast.as_bits(expected)):
                raise AssertionError(f"{name} is not torch's cast bit for bit ({src.dtype} -> {dst})")
    return {n: (src.numel() / statistics.median(s), [c / t for c, t in zip(seconds["cast"], s)])
            for n, s in seconds.items()}


def report(device: torch.device, pair: str, sizes: list[int], rounds: int) -> None:
    src_name, dst_name, *scaled = pair.split(":")
    src_dtype, dst = DTYPES[src_name], DTYPES[dst_name]
    scale = torch.tensor(upcast.CALIBRATION_SCALE) if scaled else None
    pick = upcast.calibrate(src_dtype, dst, device, bool(scaled))
    print(f"\n{device.type}: {pair} (calibration: {pick.seconds * 1e3:.1f} ms, per call "
          + ", ".join(f"{n} {pick.costs[n].overhead_s * 1e3:.2f}" for n in pick.order()) + " ms)")
    print(f"  {'values':>10}  " + "  ".join(f"{n + ' M/s':>10}{'x cast':>8}{'(min-max)':>12}" for n in upcast.PATHS)
          + "  fastest  calibration's pick")
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        src = (torch.randn(size, generator=gen) * 0.05).to(src_dtype).to(device)
        got = rates(src, dst, scale, rounds)
        cells = []
        for name in upcast.PATHS:
            if name not in got:
                cells.append(f"{'-':>10}{'':>8}{'':>12}")
                continue
            rate, ratios = got[name]
            cells.append(f"{rate / 1e6:>10.0f}{statistics.median(ratios):>8.2f}"
                         f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>12}")
        fastest = max(got, key=lambda n: got[n][0])
        print(f"  {size:>10}  " + "  ".join(cells) + f"  {fastest:>7}  {pick.order(size)[0]}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=SIZES, help="values per conversion, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="all", choices=("all", "cpu", "cuda"))
    ap.add_argument("--pairs", default=PAIRS, help="src:dst[:scaled], comma-separated (e4m3fn e5m2; bf16 fp16 fp32)")
    args = ap.parse_args(argv)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device"))
    for device in devices:
        for pair in args.pairs.split(","):
            report(device, pair, [int(s) for s in args.sizes.split(",")], args.rounds)


if __name__ == "__main__":
    main()
