"""One big file loaded through a throttled FUSE volume by 1 reader, by 4, and by the measured count.

A ComfyUI one-file DiT is one stream for a loader that reads it in file order; a network volume
that limits each stream gives that stream a fraction of the volume. wan_engine/load/readers.py
splits the load into ranges and times 1, 2 and 4 readers on its first ranges before it reads the
rest. This bench puts a random bf16 safetensors file of ``--mb`` MB behind tests/throttlefs.py
(direct_io: every read is cold) for each ``--fuse STREAM,VOLUME,LATENCY`` setting, loads it with
1 reader, 4 readers and auto (the choice forgotten before each), side by side, and prints the wall
seconds, the auto choice with its MB/s per count, and auto's time against the faster fixed count.
Every load is checked against the file's tensors and the bytes the volume served.

Usage: .venv/bin/python bench/bench_readers.py [--mb 400] [--fuse 60,240,2 --fuse 0,240,0 ...]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from throttlefs import ThrottleFS, fuse_missing  # noqa: E402
from wan_engine.load import fastload, readers  # noqa: E402

MB = 10**6
SETTINGS = ["60,240,2", "0,240,0", "0,240,2"]


def write_file(path: Path, mb: int) -> Path:
    """Random bf16 tensors of 2 to 26 MB, about ``mb`` MB in all, as a DiT's blocks are."""
    gen = torch.Generator().manual_seed(0)
    sd, total, i = {}, 0, 0
    while total < mb * MB:
        rows = 1024 * (1 + i % 13)
        sd[f"blocks.{i}.weight"] = torch.randn(rows, 1024, generator=gen).to(torch.bfloat16)
        total, i = total + rows * 1024 * 2, i + 1
    save_file(sd, str(path))
    return path


def timed_load(fs: ThrottleFS, path: Path, workers: int | None) -> tuple[float, int, dict]:
    readers.forget()
    before = fs.counters().bytes_served
    started = time.perf_counter()
    got = fastload.load_files([path], workers=workers)
    return time.perf_counter() - started, fs.counters().bytes_served - before, got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=400, help="file size, MB")
    ap.add_argument("--fuse", action="append", metavar="STREAM,VOLUME,LATENCY",
                    help=f"MB/s per stream, MB/s per volume, ms per request (0: unlimited); default {SETTINGS}")
    args = ap.parse_args()
    if fuse_missing():
        sys.exit(f"needs FUSE: {fuse_missing()}")
    work = Path(tempfile.mkdtemp(prefix="bench-readers-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    (work / "src").mkdir()
    src = write_file(work / "src" / "dit.safetensors", args.mb)
    want = load_file(str(src))
    size = src.stat().st_size
    rows = []
    for setting in args.fuse or SETTINGS:
        stream, volume, latency = (float(x) for x in setting.split(","))
        with ThrottleFS(src.parent, work / "mnt", stream, volume, latency) as fs:
            path = work / "mnt" / src.name
            row = {"setting": setting}
            for name, workers in (("1", 1), ("4", 4), ("auto", None)):
                seconds, served, got = timed_load(fs, path, workers)
                assert served <= 1.02 * size and all(torch.equal(got[k], v) for k, v in want.items()), name
                row[name] = seconds
                del got
            choice = readers.remembered(path)          # the auto load's, just made
            row["choice"] = choice.describe() if choice else "(not measured)"
        rows.append(row)
        print(row, flush=True)
    print(f"\nfile {size / MB:.0f} MB (bf16, read as it is); throttlefs direct_io; wall seconds")
    print("| per stream, per volume MB/s, latency ms | 1 reader s | 4 readers s | auto s | auto chose | "
          "auto / faster fixed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['1']:.2f} | {r['4']:.2f} | {r['auto']:.2f} | {r['choice']} | "
              f"{r['auto'] / min(r['1'], r['4']):.2f} |")


if __name__ == "__main__":
    main()
