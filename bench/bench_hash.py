"""The load-time hash cost of a .pth (hashing.py, what the loader and `adopt` run) vs `sha256sum`.

Writes one file of --mb MiB (random bytes), drops nothing from the page cache (so the first
read of each tool is warm for all: this measures the CPU cost of the hash, the upper bound of
the rate; a network volume that reads slower than this is the limit instead), and hashes it with:

  hashing.file_sha256         SHA-256 only (the .pth check of an LFS file; verify)
  hashing.hash_file(git=True) SHA-256 + git blob SHA-1 (small git files; preload's resume)
  sha256sum                   coreutils, the baseline

Prints MB/s, the ratio to sha256sum, and at that rate the time for the first load of the original
Wan 720P set (its three .pth files, 16.7 GB: T5 11.4 GB, CLIP 4.77 GB, VAE 0.51 GB, hashed once)
and for the whole 82 GB set (what `adopt` or `verify` hash).

Usage: .venv/bin/python bench/bench_hash.py [--mb 1024] [--dir /tmp] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wan_engine.store import hashing  # noqa: E402

SET_BYTES = 82e9
PTH_BYTES = 11.4e9 + 4.77e9 + 0.51e9


def write_file(path: Path, mib: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for i in range(mib):
            fh.write(block[i % 251:] + block[: i % 251])   # distinct blocks, cheap to make


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--dir", default=None, help="where to write the file (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.pth"
        write_file(path, args.mb)
        size = path.stat().st_size
        hashing.file_sha256(path)                               # warm the page cache once
        rows = {
            "sha256sum": best_of(args.repeat, lambda: subprocess.run(
                ["sha256sum", str(path)], check=True, capture_output=True)),
            "hashing.file_sha256": best_of(args.repeat, lambda: hashing.file_sha256(path)),
            "hashing.hash_file(git=True)": best_of(args.repeat, lambda: hashing.hash_file(path, git=True)),
        }
    base = rows["sha256sum"]
    print(f"file: {size / 2**20:.0f} MiB, best of {args.repeat}, page cache warm")
    print(f"{'tool':30} {'MB/s':>8} {'vs sha256sum':>13} {'.pth 16.7 GB':>13} {'82 GB set':>10}")
    for name, secs in rows.items():
        rate = size / secs
        print(f"{name:30} {rate / 1e6:8.0f} {base / secs:12.2f}x {PTH_BYTES / rate:11.0f} s "
              f"{SET_BYTES / rate / 60:7.1f} min")


if __name__ == "__main__":
    main()
