"""Read safetensors files fast from a network volume, into the target dtype, without waste.

Network volumes give 200-400 MB/s and punish mmap page faults (REFERENCE.md section 6), so
tensors are read in file order with large ``readinto`` calls straight into their final
tensors. A tensor whose dtype changes is read through one reusable staging buffer and
converted slice by slice (the next slice is read while one converts, across tensors; fp8
converts by the path measured fastest here, exactly as torch's cast: upcast.py), so an fp32
file becomes bf16 without an fp32 copy of the model.
Peak memory: the loaded tensors plus one staging buffer (``CHUNK``; several reader threads share
it out). ``load_files`` splits its files into ranges of whole tensors, read by as many threads as
the volume rewards (readers.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import torch

from ..store import stfile
from . import readahead, readers
from .upcast import FP8_SOURCES, convert, convert_by_table, upcast_setting  # noqa: F401 (API)

log = logging.getLogger(__name__)

CHUNK = 64 * 1024 * 1024
READ_SLICE = 1024 * 1024       # bytes per read call: a network client's request; fine enough to time a probe step
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


@dataclass
class LoadClock:
    """Seconds spent reading and converting during one load, summed over the reader and
    converter threads (they overlap each other and the wall clock), and the bytes read."""

    read_s: float = 0.0
    convert_s: float = 0.0
    read_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, read_s: float = 0.0, convert_s: float = 0.0, nbytes: int = 0) -> None:
        with self._lock:
            self.read_s += read_s
            self.convert_s += convert_s
            self.read_bytes += nbytes


_clock: LoadClock | None = None


@contextlib.contextmanager
def clocked() -> Iterator[LoadClock]:
    """Count this load's reads and conversions (one load at a time: assemble holds its lock)."""
    global _clock
    _clock = clock = LoadClock()
    try:
        yield clock
    finally:
        _clock = None


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor records of a safetensors header (stfile's records with torch dtypes); a loader
    asks several times per file (names, shapes, scales, tensors), the file is parsed once."""
    st = os.stat(path)
    return dict(_read_header(Path(path), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _read_header(path: Path, _size: int, _mtime_ns: int) -> dict[str, TensorInfo]:
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
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as fh, _Converting(path, chunk) as converting:
        for info, key in _wanted(path, rename):
            out[key] = _read_tensor(fh, info, key, dtype_for, scales, converting)
    return out


def load_files(paths: list[Path], rename: Rename | None = None, dtype_for: DtypeFor | None = None,
               workers: int | None = None, scales: Scales | None = None) -> dict[str, torch.Tensor]:
    """``load_file`` over shards, split into ranges of whole tensors read by several threads at
    once (reads release the GIL), one big file too. ``workers`` fixes the count; None lets
    readers.py choose it (``WAN_VOLUME_READERS``, else measured on the volume)."""
    files = [(Path(p), _wanted(p, rename)) for p in paths]
    merged: dict[str, torch.Tensor] = {}
    for part in readers.read_all(files, lambda threads: _RangeReader(dtype_for, scales, CHUNK // threads),
                                 workers):
        merged.update(part)
    return merged


def _wanted(path: Path, rename: Rename | None) -> list[tuple[TensorInfo, str]]:
    """(record, our key) of every tensor ``rename`` keeps, in file order."""
    infos = sorted(read_header(path).values(), key=lambda i: i.start)
    keyed = ((info, rename(info.name) if rename else info.name) for info in infos)
    return [(info, key) for info, key in keyed if key is not None]


def _read_tensor(fh, info: TensorInfo, key: str, dtype_for: DtypeFor | None, scales: Scales | None,
                 converting: "_Converting") -> torch.Tensor:
    dtype = dtype_for(key, info.dtype) if dtype_for else info.dtype
    tensor = torch.empty(info.shape, dtype=dtype)
    fh.seek(info.start)
    if dtype == info.dtype:
        _read_into(fh, _bytes_of(tensor), converting.path)
    else:
        converting.read(fh, info, tensor, scales.get(key) if scales else None)
    return tensor


class _RangeReader:
    """One reader thread's files (one open handle each: one stream per file) and staging buffers."""

    def __init__(self, dtype_for: DtypeFor | None, scales: Scales | None, chunk: int) -> None:
        self.dtype_for, self.scales = dtype_for, scales
        self.chunk = max(8192, chunk - chunk % 8192)    # halves that every dtype can view
        self.files: dict[Path, object] = {}
        self.converting: _Converting | None = None

    def __enter__(self) -> "_RangeReader":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.converting is not None:
                self.converting.__exit__(*exc)
        finally:
            for fh in self.files.values():
                fh.close()

    def read(self, rng: readers.Range) -> dict[str, torch.Tensor]:
        fh = self.files.get(rng.path)
        if fh is None:
            fh = self.files[rng.path] = open(rng.path, "rb", buffering=0)
        if self.converting is None:
            self.converting = _Converting(rng.path, self.chunk)
        self.converting.path = rng.path      # only names the file in errors
        return {key: _read_tensor(fh, info, key, self.dtype_for, self.scales, self.converting)
                for info, key in rng.items}


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    flat = tensor.reshape(-1).view(torch.uint8)
    return memoryview(flat.numpy()).cast("B")


def _read_into(fh, view: memoryview, path: Path) -> None:
    done, total = 0, len(view)
    started = time.perf_counter()
    pos = fh.tell()
    while done < total:
        readahead.wait_for(path, pos + done, pos + min(total, done + READ_SLICE))   # behind the read-ahead
        n = fh.readinto(view[done:done + READ_SLICE])
        if not n:
            raise OSError(f"{path}: file ends early (expected {total - done} more bytes); "
                          "the download is incomplete: run `python wanvolume.py verify`")
        done += n
        readers.count_read(n)
    if _clock is not None:
        _clock.add(read_s=time.perf_counter() - started, nbytes=done)


class _Converting:
    """Reads tensors whose dtype changes through two staging buffers, across tensors: one buffer
    is read into while the other converts on a helper thread (torch releases the GIL), so a load
    that converts costs about as much as the slower of reading and converting, even for a file
    of many small tensors. Leaving the block waits for every conversion still running."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path, self.chunk = path, chunk
        self.buffers: tuple[torch.Tensor, ...] = ()
        self.pending: list[Future | None] = [None, None]
        self.turn = 0
        # Inference mode is per thread: the helper works on tensors made in the caller's mode
        # (ComfyUI runs nodes in inference mode, where in-place writes need it on).
        self.mode = torch.is_inference_mode_enabled()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanvolume-convert")

    def __enter__(self) -> "_Converting":
        return self

    def __exit__(self, *exc) -> None:
        try:
            for turn in (0, 1):
                self._wait(turn)   # never return (or raise) while a buffer is still being read from
        finally:
            self.pool.shutdown(wait=True)

    def _wait(self, turn: int) -> None:
        pending, self.pending[turn] = self.pending[turn], None
        if pending is not None:
            pending.result()

    def read(self, fh, info: TensorInfo, out: torch.Tensor, scale: torch.Tensor | None) -> None:
        """Read ``info``'s bytes (``fh`` at its start) into ``out``, converting, times ``scale``."""
        if info.dtype in FP8_SOURCES:
            upcast_setting()           # a bad WAN_VOLUME_FP8_UPCAST fails here, before any read
        if not self.buffers:
            staging = torch.empty(self.chunk, dtype=torch.uint8)
            half = self.chunk // 2
            self.buffers = (staging[:half], staging[half:2 * half])
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        step = (self.buffers[0].numel() // itemsize) * itemsize
        flat = out.reshape(-1)
        pos, done = info.start, 0
        while pos < info.end:
            n = min(step, info.end - pos)
            self._wait(self.turn)      # this buffer's last conversion is done with it
            buf = self.buffers[self.turn]
            _read_into(fh, _bytes_of(buf)[:n], self.path)
            elems = n // itemsize
            self.pending[self.turn] = self.pool.submit(_convert_in_mode, self.mode, buf[:n].view(info.dtype),
                                                       flat[done:done + elems], scale)
            pos, done, self.turn = pos + n, done + elems, 1 - self.turn


def _convert_in_mode(inference: bool, src: torch.Tensor, out: torch.Tensor,
                     scale: torch.Tensor | None) -> None:
    started = time.perf_counter()
    with torch.inference_mode(inference):
        convert(src, out, scale)
    if _clock is not None:
        _clock.add(convert_s=time.perf_counter() - started)


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
