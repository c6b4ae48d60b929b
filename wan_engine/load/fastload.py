"""Read safetensors files fast from a network volume, into the target dtype, without waste.

Network volumes give 200-400 MB/s and punish mmap page faults (REFERENCE.md section 6), so
tensors are read in file order with large ``readinto`` calls straight into their final
tensors. A tensor whose dtype changes is read through one reusable staging buffer and
converted slice by slice (the next slice is read while one converts; fp8 converts through a
256-entry table), so an fp32 file becomes bf16 without an fp32 copy of the model.
Peak memory: the loaded tensors plus one staging buffer. Shards are read in parallel threads.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

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
Scales = Mapping[str, torch.Tensor]                     # our key -> scale (scaled fp8 files)


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
              chunk: int = CHUNK, scales: Scales | None = None) -> dict[str, torch.Tensor]:
    """Every wanted tensor of one file, read sequentially into its final dtype.

    ``scales`` (our key -> 0-dim float32 tensor, scaled fp8 files) multiply a tensor that is
    converted, as ``tensor.to(dtype) * scale.to(dtype)``; a tensor read as it is stays unscaled."""
    infos = sorted(read_header(path).values(), key=lambda i: i.start)
    out: dict[str, torch.Tensor] = {}
    staging: torch.Tensor | None = None
    with open(path, "rb", buffering=0) as fh, ThreadPoolExecutor(max_workers=1) as converter:
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
                scale = scales.get(key) if scales else None
                _read_converted(fh, info, tensor, staging, path, converter, scale)
            out[key] = tensor
    return out


def load_files(paths: list[Path], rename: Rename | None = None, dtype_for: DtypeFor | None = None,
               workers: int = PARALLEL_READERS, scales: Scales | None = None) -> dict[str, torch.Tensor]:
    """``load_file`` over shards, several at once (reads release the GIL)."""
    if len(paths) <= 1 or workers <= 1:
        merged: dict[str, torch.Tensor] = {}
        for p in paths:
            merged.update(load_file(p, rename, dtype_for, scales=scales))
        return merged
    merged = {}
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        for part in pool.map(lambda p: load_file(p, rename, dtype_for, scales=scales), paths):
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
                    path: Path, converter: ThreadPoolExecutor, scale: torch.Tensor | None = None) -> None:
    """Read ``info``'s bytes chunk by chunk and convert each into ``out``; the conversion of one
    chunk runs on ``converter`` while the next is read (torch releases the GIL), so a load that
    converts costs about as much as the slower of reading and converting."""
    itemsize = torch.empty((), dtype=info.dtype).element_size()
    half = (staging.numel() // 2 // itemsize) * itemsize
    buffers = (staging[:half], staging[half:2 * half])
    flat = out.reshape(-1)
    pos, done, turn, pending = info.start, 0, 0, None
    # Inference mode is per thread: the helper works on tensors made in the caller's mode
    # (ComfyUI runs nodes in inference mode, where in-place writes need it on).
    mode = torch.is_inference_mode_enabled()
    try:
        while pos < info.end:
            n = min(half, info.end - pos)
            buf = buffers[turn]
            _read_into(fh, _bytes_of(buf)[:n], path)   # the other buffer may still be converting
            if pending is not None:
                pending.result()
            elems = n // itemsize
            pending = converter.submit(_convert_in_mode, mode, buf[:n].view(info.dtype),
                                       flat[done:done + elems], scale)
            pos, done, turn = pos + n, done + elems, 1 - turn
    finally:
        if pending is not None:
            pending.result()   # never return (or raise) while a buffer is still being read from


def _convert_in_mode(inference: bool, src: torch.Tensor, out: torch.Tensor,
                     scale: torch.Tensor | None) -> None:
    with torch.inference_mode(inference):
        convert(src, out, scale)


FP8_SOURCES = (torch.float8_e4m3fn, torch.float8_e5m2)
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_TABLE_PIECE = 4 * 1024 * 1024   # values per table look-up (a 16 MB index)


@functools.lru_cache(maxsize=None)
def _fp8_table(src: torch.dtype, dst: torch.dtype) -> torch.Tensor:
    """All 256 fp8 values of ``src`` converted by torch to ``dst``, as same-width integers."""
    return _as_bits(torch.arange(256, dtype=torch.int32).to(torch.uint8).view(src).to(dst))


def _as_bits(values: torch.Tensor) -> torch.Tensor:
    return values.view(_SAME_WIDTH_INT[values.element_size()])


def convert(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    """``out.copy_(src)`` (then ``out *= scale.to(out.dtype)``) for flat tensors, bit for bit.

    fp8 sources go through a 256-entry table of torch's own conversion of each fp8 value (with
    the scale folded in: each result is a function of the byte alone), several times faster
    than torch's fp8 cast followed by a multiply."""
    if src.dtype not in FP8_SOURCES or not out.dtype.is_floating_point:
        out.copy_(src)
        if scale is not None:
            out.mul_(scale.to(out.dtype))
        return
    table = _fp8_table(src.dtype, out.dtype)
    if scale is not None:
        table = _as_bits(table.view(out.dtype) * scale.to(out.dtype))
    raw, bits = src.view(torch.uint8), out.view(table.dtype)
    index = torch.empty(min(_TABLE_PIECE, raw.numel()), dtype=torch.int32)
    for start in range(0, raw.numel(), _TABLE_PIECE):
        piece = raw[start:start + _TABLE_PIECE]
        idx = index[:piece.numel()]
        idx.copy_(piece)
        torch.index_select(table, 0, idx, out=bits[start:start + piece.numel()])


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
