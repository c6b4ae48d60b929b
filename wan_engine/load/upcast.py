"""fp8 weights into a wider float, bit for bit torch's cast, by the path that is fastest here.

Three paths give the same bits (``out.copy_(src)``, then ``out *= scale.to(out.dtype)``):

- ``cast``: torch's own cast and multiply (two passes);
- ``table``: a 256-entry table of torch's cast of every fp8 byte (the scale folded in), indexed;
- ``bits``: e4m3fn only: each byte moved into the wider float's bits, one multiply (below).

Which is fastest depends on the machine and its load (docs/layouts.md has the figures and
bench/bench_fp8_upcast.py measures them), so the first conversion of each (device type, fp8
dtype, target dtype, scaled or not) times the paths on 16 K and 256 K values (a few ms on an idle
CPU, once per process; logged at INFO with the figures), fits each one's per-call and per-value
cost, and converts each slice by the path predicted fastest for its size; each path is also
checked bit for bit against torch's cast on all 256 bytes on that device, NaNs included, and left
out if it differs. ``WAN_VOLUME_FP8_UPCAST=cast|table|bits`` skips the measurement (``bits`` where
it cannot apply, e5m2 or a scale it cannot take, uses the table).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..errors import InvalidInput

log = logging.getLogger(__name__)

ENV_UPCAST = "WAN_VOLUME_FP8_UPCAST"
PATHS = ("cast", "table", "bits")
SETTINGS = ("auto",) + PATHS
FP8_SOURCES = (torch.float8_e4m3fn, torch.float8_e5m2)
CALIBRATION_VALUES = 1 << 18     # 256 K values: 0.1-3 ms per path on an idle CPU, microseconds on a GPU
CALIBRATION_SMALL = 1 << 14      # and 16 K: with the 256 K, each path's per-call cost and per-value cost
CALIBRATION_ROUNDS = 3           # best of 3, the paths interleaved
SLICE_VALUES = 32 * 1024 * 1024  # fp8 values the loader converts at a time (fastload: CHUNK // 2 bytes)
CALIBRATION_SCALE = 0.0123       # a scale as fp8_scaled files carry (the bit move can take it)
UPCAST_FIX = (f"set {ENV_UPCAST} to one of {', '.join(SETTINGS)} (auto: the path measured fastest on "
              "this machine at first use; all give torch's own cast bit for bit), or unset it")

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

Key = tuple[str, torch.dtype, torch.dtype, bool]          # (device type, src, dst, scaled)
Measure = Callable[[str, int, Callable[[], None]], float]   # (path, values, run it) -> seconds


def upcast_setting(environ: Mapping[str, str] = os.environ) -> str:
    """The operator's ``WAN_VOLUME_FP8_UPCAST`` (blank or unset: auto), checked."""
    raw = environ.get(ENV_UPCAST)
    value = (raw or "").strip().lower() or "auto"
    if value not in SETTINGS:
        raise InvalidInput(f"is not an fp8 upcast path (allowed: {', '.join(SETTINGS)})",
                           field=ENV_UPCAST, value=raw, fix=UPCAST_FIX)
    return value


# ---- the three paths: each returns False where it cannot give torch's bits ----------------

def _cast(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None) -> bool:
    out.copy_(src)
    if scale is not None:
        out.mul_(scale.to(out.dtype))
    return True


def _table(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None) -> bool:
    if scale is not None and scale.numel() != 1:
        return False
    convert_by_table(src, out, scale)
    return True


def _bits(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None) -> bool:
    if src.dtype != torch.float8_e4m3fn or out.dtype not in _E4M3_BITS or (scale is not None and scale.numel() != 1):
        return False
    factor = _bit_move_factor(out.dtype, None if scale is None else float(scale.to(out.dtype)), out.device.type)
    if factor is None:
        return False
    signed, unsigned = src.view(torch.int8), src.view(torch.uint8)
    _move_bits(signed, out, factor)
    if int(signed.max()) == _E4M3_NAN or int(unsigned.max()) == 0xFF:   # NaN bytes: from the table
        nan = (unsigned & _E4M3_NAN) == _E4M3_NAN
        as_bits(out)[nan] = _scaled_table(src.dtype, out.dtype, scale, out.device)[unsigned[nan].long()]
    return True


_PATH_FN = {"cast": _cast, "table": _table, "bits": _bits}


def run_path(name: str, src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> bool:
    """Convert by the path ``name`` (one of PATHS); False, with ``out`` untouched, where it cannot apply."""
    return _PATH_FN[name](src, out, scale)


def convert(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    """``out.copy_(src)`` (then ``out *= scale.to(out.dtype)``) for flat tensors, bit for bit,
    fp8 sources by the fastest path here (or the one ``WAN_VOLUME_FP8_UPCAST`` names)."""
    if src.dtype not in FP8_SOURCES or not out.dtype.is_floating_point:
        _cast(src, out, scale)
        return
    for name in _order(src.dtype, out.dtype, out.device, scale is not None, src.numel()):
        if _PATH_FN[name](src, out, scale):
            return
    _cast(src, out, scale)


def convert_by_table(src: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    """``convert`` for fp8 sources through the 256-entry table (any fp8 source, a scalar scale)."""
    table = _scaled_table(src.dtype, out.dtype, scale, out.device)
    raw, bits = src.view(torch.uint8), out.view(table.dtype)
    index = torch.empty(min(_TABLE_PIECE, raw.numel()), dtype=torch.int32, device=raw.device)
    for start in range(0, raw.numel(), _TABLE_PIECE):
        piece = raw[start:start + _TABLE_PIECE]
        idx = index[:piece.numel()]
        idx.copy_(piece)
        torch.index_select(table, 0, idx, out=bits[start:start + piece.numel()])


def _order(src: torch.dtype, dst: torch.dtype, device: torch.device, scaled: bool,
           values: int) -> tuple[str, ...]:
    setting = upcast_setting()
    if setting != "auto":
        return tuple(dict.fromkeys((setting, "table", "cast")))   # one that cannot apply: the table
    return calibration(src, dst, device, scaled).order(values)


# ---- the measurement ------------------------------------------------------------------------

@dataclass(frozen=True)
class PathCost:
    """One path's time for n values: a per-call part (launches, thread wake-ups: what a busy
    machine inflates) and a per-value part, fitted on two sizes."""

    overhead_s: float
    per_value_s: float

    def seconds(self, values: int) -> float:
        return self.overhead_s + self.per_value_s * values

    @classmethod
    def fit(cls, small: int, small_s: float, large: int, large_s: float) -> "PathCost":
        if large_s <= small_s:          # noise hid the per-value part: count it all per value
            return cls(0.0, large_s / large)
        per_value = (large_s - small_s) / (large - small)
        return cls(max(0.0, small_s - per_value * small), per_value)


@dataclass(frozen=True)
class Calibration:
    """The paths timed for one key: the cost of each that applies and gave torch's bits."""

    key: Key
    costs: dict[str, PathCost]
    sizes: tuple[int, int]
    rounds: int
    seconds: float                 # the whole calibration, the exactness checks included
    differs: tuple[str, ...] = ()  # paths that applied but did not give torch's bits (left out)

    def order(self, values: int = SLICE_VALUES) -> tuple[str, ...]:
        """The paths, the fastest for a conversion of ``values`` first."""
        return tuple(sorted(self.costs, key=lambda n: self.costs[n].seconds(values))) or ("cast",)

    def rate(self, name: str, values: int = SLICE_VALUES) -> float:
        """Predicted values/s of ``name`` on a conversion of ``values``."""
        seconds = self.costs[name].seconds(values)
        return values / seconds if seconds > 0 else math.inf

    def describe(self) -> str:
        device, src, dst, scaled = self.key
        rates = ", ".join(f"{n} {self.rate(n) / 1e6:.0f}" for n in self.order())
        calls = ", ".join(f"{n} {self.costs[n].overhead_s * 1e3:.2f}" for n in self.order())
        off = f"; {', '.join(self.differs)} left out (not torch's bits)" if self.differs else ""
        return (f"fp8 upcast {_short(src)} -> {_short(dst)}{' x scale' if scaled else ''} on {device}: "
                f"{rates} M values/s predicted for the loader's {SLICE_VALUES} values, per call {calls} ms "
                f"(best of {self.rounds} on {self.sizes[0]} and {self.sizes[1]} values, "
                f"{self.seconds * 1e3:.1f} ms{off}): using {self.order()[0]} there and the fastest predicted "
                f"for each size ({self.order(self.sizes[0])[0]} at {self.sizes[0]}); {ENV_UPCAST} overrides")


_calibrations: dict[Key, Calibration] = {}
_lock = threading.Lock()


def calibration(src: torch.dtype, dst: torch.dtype, device: torch.device | str, scaled: bool) -> Calibration:
    """The calibration for this key, measured at its first use in this process."""
    device = torch.device(device)
    key = (device.type, src, dst, scaled)
    with _lock:                            # shards load in parallel: one measurement per key
        if key not in _calibrations:
            _calibrations[key] = calibrate(src, dst, device, scaled)
            log.info("%s", _calibrations[key].describe())
        return _calibrations[key]


def forget_calibrations() -> None:
    """Measure again at the next use (tests, or after the machine's load changed)."""
    with _lock:
        _calibrations.clear()


def calibrate(src: torch.dtype, dst: torch.dtype, device: torch.device | str, scaled: bool,
              measure: Measure | None = None, values: int | None = None,
              rounds: int | None = None) -> Calibration:
    """Time every path on ``values`` fp8 values (all 256 bytes but the NaNs, repeated) and on
    CALIBRATION_SMALL of them, on ``device``, interleaved, best of ``rounds`` after one untimed
    run; first check each on all 256 bytes against torch's cast. ``measure(path, values, run)`` times one run (seconds);
    tests inject their own."""
    started = time.perf_counter()
    device = torch.device(device)
    measure = measure or timer(device)
    rounds = rounds or CALIBRATION_ROUNDS
    scale = torch.tensor(CALIBRATION_SCALE) if scaled else None
    usable, differs = _exact_paths(src, dst, device, scale)
    data = _calibration_bytes(src, values or CALIBRATION_VALUES, device)
    sizes = (min(CALIBRATION_SMALL, data.numel() // 2), data.numel())
    out = torch.empty(data.numel(), dtype=dst, device=device)
    best = {(name, n): math.inf for name in usable for n in sizes}
    for name in usable:                # untimed: the first parallel run in a process wakes the threads
        _PATH_FN[name](data, out, scale)
    for round_ in range(rounds):
        for name in usable[round_ % len(usable):] + usable[:round_ % len(usable)]:
            for n in sizes:
                run = functools.partial(_PATH_FN[name], data[:n], out[:n], scale)
                best[name, n] = min(best[name, n], measure(name, n, run))
    costs = {name: PathCost.fit(sizes[0], best[name, sizes[0]], sizes[1], best[name, sizes[1]]) for name in usable}
    return Calibration((device.type, src, dst, scaled), costs, sizes, rounds, time.perf_counter() - started,
                       differs)


def _exact_paths(src: torch.dtype, dst: torch.dtype, device: torch.device,
                 scale: torch.Tensor | None) -> tuple[list[str], tuple[str, ...]]:
    """The paths that apply to this key and give torch's cast's bits on every byte here."""
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8).to(device).view(src)
    expected = torch.empty(256, dtype=dst, device=device)
    _cast(every, expected, scale)
    usable, differs = [], []
    for name in PATHS:
        got = torch.full((256,), 7.0, dtype=dst, device=device)
        if not _PATH_FN[name](every, got, scale):
            continue
        (usable if torch.equal(as_bits(got), as_bits(expected)) else differs).append(name)
    if differs:
        log.warning("fp8 upcast %s -> %s on %s: %s did not give torch's cast bit for bit; not used",
                    _short(src), _short(dst), device.type, ", ".join(differs))
    return usable, tuple(differs)


def _calibration_bytes(src: torch.dtype, values: int, device: torch.device) -> torch.Tensor:
    """Every fp8 byte but the NaNs (weights have none), repeated to about ``values``."""
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(src)
    finite = torch.arange(256, dtype=torch.int32).to(torch.uint8)[~torch.isnan(every.float())]
    return finite.repeat(max(1, values // finite.numel())).to(device).view(src)


def timer(device: torch.device) -> Measure:
    """Seconds of one run on ``device`` (waits for the GPU before and after)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def measure(_name: str, _values: int, run: Callable[[], None]) -> float:
        sync()
        t = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - t
    return measure


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- the table and the bit move ---------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _fp8_table(src: torch.dtype, dst: torch.dtype, device: torch.device) -> torch.Tensor:
    """All 256 fp8 values of ``src`` converted by torch on ``device`` to ``dst``, as same-width ints."""
    return as_bits(torch.arange(256, dtype=torch.int32).to(torch.uint8).to(device).view(src).to(dst))


def as_bits(values: torch.Tensor) -> torch.Tensor:
    """The same memory as same-width integers (bit-for-bit comparisons: NaN equals its own bits)."""
    return values.view(_SAME_WIDTH_INT[values.element_size()])


def _scaled_table(src: torch.dtype, dst: torch.dtype, scale: torch.Tensor | None,
                  device: torch.device) -> torch.Tensor:
    table = _fp8_table(src, dst, device)
    return table if scale is None else as_bits(table.view(dst) * scale.to(device=device, dtype=dst))


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
def _bit_move_factor(dst: torch.dtype, scale: float | None, device_type: str = "cpu") -> float | None:
    """The factor for the bit move into ``dst`` with ``scale``, or None where it would not give
    torch's own results on ``device_type`` for all 254 non-NaN bytes (checked once per scale: a
    scale so large that the factor overflows, flush-to-zero of subnormals, ...)."""
    device = torch.device(device_type)
    factor = 2.0 ** _E4M3_BITS[dst][2] * (1.0 if scale is None else scale)
    raw = torch.arange(256, dtype=torch.int32).to(torch.uint8).to(device)
    moved = torch.empty(256, dtype=dst, device=device)
    try:
        _move_bits(raw.view(torch.int8), moved, factor)
    except (RuntimeError, OverflowError):
        return None
    expected = _scaled_table(torch.float8_e4m3fn, dst,
                             None if scale is None else torch.tensor(scale, dtype=dst), device)
    keep = (raw & _E4M3_NAN) != _E4M3_NAN
    return factor if torch.equal(as_bits(moved)[keep], expected[keep]) else None
