"""Read a load in ranges with several readers, as many as the volume rewards (measured, not guessed).

Network filesystems often limit each stream (one open file) as well as the whole volume: there,
several readers of one file load faster than one; where only the volume is limited they only add
seeks and staging memory. So the load is split into ranges (contiguous runs of whole tensors; a
big file gives many, so one file can be read by several threads) and the first ranges of a cold
load are read with 1 reader, then 2, then 4, each step's MB/s timed on its wall clock after an
untimed step (opening; a throttle's burst: blkio gave a first step 331 MB/s of 240). Those
reads are part of the load (nothing is read twice). The count that is faster than every smaller
count by ``MARGIN`` wins and reads the rest; it is remembered per filesystem (device id) for the
process and logged at INFO: "readers: 4 (1: 240 MB/s, 2: 470 MB/s, 4: 900 MB/s)".
``WAN_VOLUME_READERS=auto|N`` (N from 1 to 64) overrides. The probes read at most half a load
(each step reads ``PROBE_BYTES`` per reader, less for a smaller load); a load too small to time,
or whose first bytes are already in the page cache (a prefetch read them: timing them would
measure memory), uses the remembered count, else ``FALLBACK_READERS``.

This module knows ranges and readers, not tensors: fastload gives it a reader that turns one
range into tensors (dtype conversion in its share of the staging buffer, one reader per thread).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Protocol, Sequence

from ..errors import InvalidInput
from . import pagecache

log = logging.getLogger(__name__)

MB = 10**6
ENV_READERS = "WAN_VOLUME_READERS"
MAX_READERS = 64
PROBE_COUNTS = (1, 2, 4)
PROBE_BYTES = 64 * MB        # per reader in each probe step: ~0.25 s at a volume's 240 MB/s
MIN_PROBE_BYTES = 4 * MB     # a smaller load's probes would be too short to time
PROBE_ROOM = 2               # the probes read at most 1 / PROBE_ROOM of a load (else smaller probes)
RANGE_BYTES = 32 * MB        # a range's size (whole tensors: a bigger tensor is a range alone)
MARGIN = 1.15                # more readers must beat fewer by this factor to be chosen
FALLBACK_READERS = 4         # an unmeasured load on an unmeasured filesystem
READERS_FIX = f"set {ENV_READERS}=auto (measured on the first large load) or a reader count, 1 to {MAX_READERS}"


class Span(Protocol):
    start: int
    end: int


@dataclass(frozen=True)
class Range:
    """Whole tensors of one file, in file order: ``items`` are (span, anything the reader needs)."""

    path: Path
    items: tuple[tuple[Span, Any], ...]

    @property
    def nbytes(self) -> int:
        return sum(span.end - span.start for span, _ in self.items)


@dataclass(frozen=True)
class Choice:
    """How many readers a filesystem gets, and the MB/s per count it was chosen by (if measured)."""

    readers: int
    rates: Mapping[int, float]
    device: int

    def describe(self) -> str:
        rates = ", ".join(f"{n}: {mbps:.0f} MB/s" for n, mbps in self.rates.items())
        return f"readers: {self.readers}" + (f" ({rates})" if rates else "")


class RangeReader(Protocol):
    def read(self, rng: Range) -> dict: ...


OpenReader = Callable[[int], ContextManager[RangeReader]]    # one reader thread's, given the thread count


_chosen: dict[int, Choice] = {}
_chosen_lock = threading.Lock()
_setting_logged: list[int] = []     # the setting is logged once per process


def split(path: Path, items: Sequence[tuple[Span, Any]], range_bytes: int | None = None) -> list[Range]:
    """``items`` (sorted by start) as ranges of at least ``range_bytes`` (the last may be smaller)."""
    size = range_bytes or RANGE_BYTES
    ranges, current, nbytes = [], [], 0
    for span, extra in items:
        current.append((span, extra))
        nbytes += span.end - span.start
        if nbytes >= size:
            ranges.append(Range(Path(path), tuple(current)))
            current, nbytes = [], 0
    if current:
        ranges.append(Range(Path(path), tuple(current)))
    return ranges


def readers_setting(environ: Mapping[str, str] = os.environ) -> int | None:
    """The operator's ``WAN_VOLUME_READERS``: None for auto (unset, blank or "auto"), else N."""
    raw = environ.get(ENV_READERS)
    value = (raw or "").strip().lower() or "auto"
    if value == "auto":
        return None
    if value.isdigit() and 1 <= int(value) <= MAX_READERS:
        return int(value)
    raise InvalidInput(f"is not a reader count (allowed: auto, or 1 to {MAX_READERS})",
                       field=ENV_READERS, value=raw, fix=READERS_FIX)


def remembered(path: Path) -> Choice | None:
    """The count chosen for ``path``'s filesystem in this process, if one was measured."""
    with _chosen_lock:
        return _chosen.get(os.stat(path).st_dev)


def forget() -> None:
    """Drop every remembered choice (tests; a remounted volume may reuse a device id)."""
    with _chosen_lock:
        _chosen.clear()


def pick(rates: Mapping[int, float], margin: float = MARGIN) -> int:
    """The reader count to keep: a larger count wins only by beating the best so far by ``margin``."""
    best = min(rates)
    for count in sorted(rates):
        if rates[count] > rates[best] * margin:
            best = count
    return best


def read_all(files: Sequence[tuple[Path, Sequence[tuple[Span, Any]]]],
             open_reader: OpenReader, workers: int | None = None) -> list[dict]:
    """Each range's result (``reader.read(range)``) over ``files`` ((path, items sorted by start)),
    in file and range order. ``workers`` fixes the count; None takes ``WAN_VOLUME_READERS``, then
    auto (see the module): a load too small for probes of ``MIN_PROBE_BYTES`` is not measured."""
    count = workers if workers is not None else _from_setting(files)
    total = sum(span.end - span.start for _, items in files for span, _ in items)
    probe = min(PROBE_BYTES, total // (PROBE_ROOM * (1 + sum(PROBE_COUNTS))))
    known = None
    if count is None and files:
        device = os.stat(files[0][0]).st_dev
        with _chosen_lock:
            known = _chosen.get(device)
    measure = count is None and known is None and probe >= MIN_PROBE_BYTES
    if measure and cached_share(files, (1 + sum(PROBE_COUNTS)) * probe) > 0.5:
        log.debug("not measuring readers on %s: its first bytes are in the page cache", files[0][0])
        measure = False
    range_bytes = min(RANGE_BYTES, probe // 8) if measure else RANGE_BYTES   # 8 per reader in a probe step
    queue = _Queue([rng for path, items in files for rng in split(path, items, range_bytes)])
    if measure:
        count = _measure(queue, open_reader, device, probe, files[0][0]).readers
    elif count is None:
        count = known.readers if known is not None else FALLBACK_READERS
    _phase(queue, count, None, open_reader)
    return queue.results


def _from_setting(files: Sequence[tuple[Path, Any]]) -> int | None:
    count = readers_setting()
    if count is not None and files and not _setting_logged:
        _setting_logged.append(count)
        log.info("readers: %d (set by %s)", count, ENV_READERS)
    return count


def _measure(queue: "_Queue", open_reader, device: int, probe: int, path: Path) -> Choice:
    _phase(queue, 1, probe, open_reader)      # untimed: opening, and a throttle's burst allowance
    rates = {}
    for count in PROBE_COUNTS:
        nbytes, seconds = _phase(queue, count, count * probe, open_reader)
        rates[count] = nbytes / max(seconds, 1e-9) / MB
    choice = Choice(pick(rates), rates, device)
    with _chosen_lock:
        _chosen.setdefault(device, choice)
    log.info("%s, for the filesystem of %s", choice.describe(), path)
    return choice


def cached_share(files: Sequence[tuple[Path, Sequence[tuple[Span, Any]]]], nbytes: int,
                 samples: int = 16) -> float:
    """The share of pages, sampled over the load's first ``nbytes``, already in the page cache
    (0 where it cannot tell). A prefetch or an earlier load may have read them: timing them would
    measure memory, and the choice would be wrong for the volume."""
    points, seen = [], 0
    wanted = [i * nbytes // samples for i in range(samples)]
    for path, items in files:
        for span, _ in items:
            size = span.end - span.start
            while wanted and wanted[0] < seen + size:
                points.append((path, span.start + wanted.pop(0) - seen))
            seen += size
    return pagecache.resident_share(points)


class _Queue:
    """Ranges handed out in order to the readers of one phase at a time; a failure stops them all."""

    def __init__(self, ranges: Sequence[Range]) -> None:
        self.ranges = list(ranges)
        self.results: list[dict] = [{} for _ in self.ranges]
        self.next = 0
        self.taken = 0          # bytes handed out in the current phase
        self.budget: int | None = None
        self.failed = False
        self.lock = threading.Lock()

    def start_phase(self, budget: int | None) -> None:
        self.taken, self.budget = 0, budget

    def take(self) -> int | None:
        with self.lock:
            over = self.budget is not None and self.taken >= self.budget
            if self.failed or over or self.next >= len(self.ranges):
                return None
            index, self.next = self.next, self.next + 1
            self.taken += self.ranges[index].nbytes
            return index


def _phase(queue: _Queue, count: int, budget: int | None, open_reader) -> tuple[int, float]:
    """Read ranges with ``count`` threads until ``budget`` bytes are handed out (None: all);
    the bytes read and the phase's wall-clock seconds."""
    queue.start_phase(budget)
    started = time.perf_counter()

    def work() -> None:
        try:
            with open_reader(threads) as reader:
                while (index := queue.take()) is not None:
                    queue.results[index] = reader.read(queue.ranges[index])
        except BaseException:
            queue.failed = True
            raise

    threads = max(1, min(count, len(queue.ranges) - queue.next))
    if threads == 1:
        work()
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="wanvolume-read") as pool:
            for future in [pool.submit(work) for _ in range(threads)]:
                future.result()
    return queue.taken, time.perf_counter() - started
