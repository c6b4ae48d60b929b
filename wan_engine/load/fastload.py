"""Read safetensors files fast from a network volume, into the target dtype, without waste.

Network volumes give 200-400 MB/s and punish mmap page faults (REFERENCE.md section 6), so
tensors are read in file order with large ``readinto`` calls straight into their final
tensors. A tensor whose dtype changes is read through one reusable staging buffer and
converted slice by slice (the next slice is read while one converts, across tensors; fp8
converts by moving bits, exactly as torch's cast), so an fp32 file becomes bf16 without an
fp32 copy of the model.
Peak memory: the loaded tensors plus one staging buffer. Shards are read in parallel threads.
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
    infos = sorted(read_header(path).values(), key=lambda i: i.start)
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as fh, _Converting(path, chunk) as converting:
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
                converting.read(fh, info, tensor, scales.get(key) if scales else None)
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
    started = time.perf_counter()
    while done < total:
        n = fh.readinto(view[done:done + CHUNK])
        if not n:
            raise OSError(f"{path}: file ends early (expected {total - done} more bytes); "
                          "the download is incomplete: run `python wanvolume.py verify`")
        done += n
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


FP8_SOURCES = (torch.float8_e4m3fn, torch.float8_e5m2)
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_TABLE_PIECE = 4 * 1024 * 1024   # values per table look-up (a 16 MB index)
# e4m3fn into a wider float by moving bits: the byte, sign-extended into the wider integer and
# shifted so its 3 mantissa bits top the target's mantissa, then masked to the sign bit and the
# 7 exponent+mantissa bits, is the fp8 value times 2**(7 - bias) exactly, subnormals and zero
# included; one multiply by 2**(bias - 7) * scale gives torch's rounding of value * scale.
# target: (same-width int, shift, bias - 7)
_E4M3_BITS = {torch.bfloat16: (torch.int16, 4, 120), torch.float16: (torch.int16, 7, 8),
              torch.float32: (torch.int32, 20, 120)}
_E4M3_NAN = 0x7F   # 0x7f and 0xff are e4m3fn's NaNs, the only bytes the bit move gets wrong


@functools.lru_cache(maxsize=None)
def _fp8_table(src: torch.dtype, dst: torch.dtype) -> torch.Tensor:
    """All 256 fp8 values of ``src`` converted by torch to ``dst``, as same-width integers."""
    return _as_bits(torch.arange(256, dtype=torch.int32).to(torch.uint8).view(src).to(dst))


def _as_bits(values: torch.Tensor) -> torch.Tensor:
    return values.view(_SAME_WIDTH_INT[values.element_size()])


def _scaled_table(src: torch.dtype, dst: torch.dtype, scale: torch.Tensor | None) -> torch.Tensor:
    table = _fp8_table(src, dst)
    return table if scale is None else _as_bits(table.view(dst) * scale.to(dst))


def _move_bits(raw: torch.Tensor, out: torch.Tensor, factor: float) -> None:
    """e4m3fn bytes ``raw`` (as int8) into ``out`` by the bit move above, times ``factor``."""
    int_type, shift, _ = _E4M3_BITS[out.dtype]
    width = out.element_size() * 8
    mask = -(1 << (width - 1)) + (1 << (shift + 7)) - 1     # sign bit + 7 bits, as a signed int
    bits = out.view(int_type)
    bits.copy_(raw)
    bits.bitwise_left_shift_(shift).bitwise_and_(mask)
    out.mul_(factor)


@functools.lru_cache(maxsize=256)
def _bit_move_factor(dst: torch.dtype, scale: float | None) -> float | None:
    """The factor for the bit move into ``dst`` with ``scale``, or None where it would not give
    torch's own results for all 254 non-NaN bytes (checked once per scale: a scale so large
    that the factor overflows, flush-to-zero of subnormals, ...); the table is used then."""
    factor = 2.0 ** _E4M3_BITS[dst][2] * (1.0 if scale is None else scale)
    raw = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    moved = torch.empty(256, dtype=dst)
    try:
        _move_bits(raw.view(torch.int8), moved, factor)
    except (RuntimeError, OverflowError):
        return None
    expected = _scaled_table(torch.float8_e4m3fn, dst,
                             None if scale is None else torch.tensor(scale, dtype=dst))
    keep = (raw & _E4M3_NAN) != _E4M3_NAN
    return factor if torch.equal(_as_bits(moved)[keep], expected[keep]) else None


def convert(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    """``out.copy_(src)`` (then ``out *= scale.to(out.dtype)``) for flat tensors, bit for bit.

    e4m3fn sources into bf16/fp16/fp32 move bits (a few vectorised passes, about 25x torch's
    fp8 cast); other fp8 sources go through a 256-entry table of torch's own conversion of each
    fp8 value (with the scale folded in: each result is a function of the byte alone)."""
    if src.dtype not in FP8_SOURCES or not out.dtype.is_floating_point:
        out.copy_(src)
        if scale is not None:
            out.mul_(scale.to(out.dtype))
        return
    if src.dtype == torch.float8_e4m3fn and out.dtype in _E4M3_BITS and (scale is None or scale.numel() == 1):
        factor = _bit_move_factor(out.dtype, None if scale is None else float(scale.to(out.dtype)))
        if factor is not None:
            signed, unsigned = src.view(torch.int8), src.view(torch.uint8)
            _move_bits(signed, out, factor)
            if int(signed.max()) == _E4M3_NAN or int(unsigned.max()) == 0xFF:   # NaN bytes: from the table
                nan = (unsigned & _E4M3_NAN) == _E4M3_NAN
                _as_bits(out)[nan] = _scaled_table(src.dtype, out.dtype, scale)[unsigned[nan].long()]
            return
    convert_by_table(src, out, scale)


def convert_by_table(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    """``convert`` for fp8 sources through the 256-entry table (any fp8 source, any scale)."""
    table = _scaled_table(src.dtype, out.dtype, scale)
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
