"""Read safetensors files fast from a network volume, into the target dtype, without waste.

Network volumes give 200-400 MB/s and punish mmap page faults (REFERENCE.md section 6), so
tensors are read in file order with large ``readinto`` calls straight into their final
tensors. A tensor whose dtype changes is read through one reusable staging buffer and
converted slice by slice, so an fp32 file becomes bf16 without an fp32 copy of the model.
Peak memory: the loaded tensors plus one staging buffer. Shards are read in parallel threads.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..store import stfile

log = logging.getLogger(__name__)

CHUNK = 64 * 1024 * 1024
PARALLEL_READERS = 4
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
          "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}

Rename = Callable[[str], "str | None"]          # file key -> our key, None to skip
DtypeFor = Callable[[str, torch.dtype], torch.dtype]   # (our key, file dtype) -> dtype in memory


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int          # absolute byte offsets in the file
    end: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor records of a safetensors header (stfile's records with torch dtypes)."""
    header = stfile.read_header(path)
    try:
        return {r.name: TensorInfo(r.name, DTYPES[r.dtype], r.shape, r.start, r.end)
                for r in header.tensors.values()}
    except KeyError as exc:
        raise stfile.HeaderError(f"{path}: tensor dtype {exc} is not supported") from exc


def header_shapes(paths: Iterable[Path], rename: Rename | None = None) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor in ``paths`` under our names (for inferring configs)."""
    shapes = {}
    for p in paths:
        for info in read_header(p).values():
            key = rename(info.name) if rename else info.name
            if key is not None:
                shapes[key] = info.shape
    return shapes


def load_file(path: Path, rename: Rename | None = None, dtype_for: DtypeFor | None = None,
              chunk: int = CHUNK) -> dict[str, torch.Tensor]:
    """Every wanted tensor of one file, read sequentially into its final dtype."""
    infos = sorted(read_header(path).values(), key=lambda i: i.start)
    out: dict[str, torch.Tensor] = {}
    staging: torch.Tensor | None = None
    with open(path, "rb", buffering=0) as fh:
        for info in infos:
            key = rename(info.name) if rename else info.name
            if key is None:
                continue
            dtype = dtype_for(key, info.dtype) if dtype_for else info.dtype
            tensor = torch.empty(info.shape, dtype=dtype)
            fh.seek(info.start)
            if dtype == info.dtype:
                _read_into(fh, _bytes_of(tensor), path)
            else:
                if staging is None:
                    staging = torch.empty(chunk, dtype=torch.uint8)
                _read_converted(fh, info, tensor, staging, path)
            out[key] = tensor
    return out


def load_files(paths: list[Path], rename: Rename | None = None, dtype_for: DtypeFor | None = None,
               workers: int = PARALLEL_READERS) -> dict[str, torch.Tensor]:
    """``load_file`` over shards, several at once (reads release the GIL)."""
    if len(paths) <= 1 or workers <= 1:
        merged: dict[str, torch.Tensor] = {}
        for p in paths:
            merged.update(load_file(p, rename, dtype_for))
        return merged
    merged = {}
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        for part in pool.map(lambda p: load_file(p, rename, dtype_for), paths):
            merged.update(part)
    return merged


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    flat = tensor.reshape(-1).view(torch.uint8)
    return memoryview(flat.numpy()).cast("B")


def _read_into(fh, view: memoryview, path: Path) -> None:
    done, total = 0, len(view)
    while done < total:
        n = fh.readinto(view[done:done + CHUNK])
        if not n:
            raise OSError(f"{path}: file ends early (expected {total - done} more bytes); "
                          "the download is incomplete: run `python wanvolume.py verify`")
        done += n


def _read_converted(fh, info: TensorInfo, out: torch.Tensor, staging: torch.Tensor,
                    path: Path) -> None:
    itemsize = torch.empty((), dtype=info.dtype).element_size()
    step = (staging.numel() // itemsize) * itemsize
    flat = out.reshape(-1)
    pos, done = info.start, 0
    while pos < info.end:
        n = min(step, info.end - pos)
        _read_into(fh, _bytes_of(staging)[:n], path)
        elems = n // itemsize
        flat[done:done + elems].copy_(staging[:n].view(info.dtype))
        pos, done = pos + n, done + elems


def read_plain(paths: Iterable[Path], chunk: int = CHUNK) -> int:
    """Read files with plain large reads and discard the bytes (the bench baseline)."""
    buf = bytearray(chunk)
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                total += n
    return total


def prefetch(paths: Iterable[Path], chunk: int = CHUNK) -> threading.Thread:
    """Warm the page cache with ``paths`` in a background thread, so the first load is fast."""
    files = [Path(p) for p in paths]

    def run() -> None:
        for p in files:
            try:
                if hasattr(os, "posix_fadvise"):
                    with open(p, "rb") as fh:
                        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                read_plain([p], chunk)
            except OSError as exc:
                log.warning("prefetch of %s stopped: %s", p, exc)
                return
        log.info("prefetched %d files into the page cache", len(files))

    thread = threading.Thread(target=run, name="wanvolume-prefetch", daemon=True)
    thread.start()
    return thread
