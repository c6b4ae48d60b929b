"""Read a load in ranges with several readers, as many as the volume rewards (measured, not guessed).

Network filesystems often limit each stream (one open file) as well as the whole volume: there,
several readers of one file load faster than one; where only the volume is limited they only add
seeks. So a load is split into ranges (contiguous runs of whole tensors: one big file gives many)
and, after an untimed step (opening; a throttle's burst: blkio gave a first step 331 MB/s of 240),
its first ranges are read by 1 reader, then 2, then 4, each step timed while all its readers are
busy (``count_read``). These reads are part of the load: nothing is read twice. A count faster
than every smaller one by ``MARGIN`` wins, reads the rest, is remembered per filesystem (device
id) for the process and logged at INFO: "readers: 4 (1: 240 MB/s, 2: 470 MB/s, 4: 900 MB/s)".
``WAN_VOLUME_READERS=auto|N`` (1 to 64) overrides. Probes read at most half a load; a load too
small to time, or already in the page cache (a prefetch: that would time memory), takes the
remembered count, else ``FALLBACK_READERS``. fastload gives this module a reader that turns a
range into tensors (its dtype conversion, its share of the staging buffer), one per thread.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
_local = threading.local()          # a reader thread's queue, for count_read
_chosen: dict[int, Choice] = {}
_chosen_lock = threading.Lock()
_setting_logged: list[int] = []     # the setting is logged once per process
_behind = threading.local()         # a load's thread that reads behind a read-ahead (readahead.py)


@contextmanager
def behind_readahead():
    """The calling thread's loads read what a read-ahead already brought into the page cache (or
    compete with it for the volume): they take the remembered count and time nothing."""
    _behind.on = True
    try:
        yield
    finally:
        _behind.on = False


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
    """Each range's ``reader.read(range)`` over ``files`` ((path, items sorted by start)), in order.
    ``workers`` fixes the count; None takes ``WAN_VOLUME_READERS``, then auto (see the module)."""
    count = workers if workers is not None else _from_setting(files)
    total = sum(span.end - span.start for _, items in files for span, _ in items)
    probe = min(PROBE_BYTES, total // (PROBE_ROOM * (1 + sum(PROBE_COUNTS))))
    device = os.stat(files[0][0]).st_dev if files else None
    with _chosen_lock:
        known = _chosen.get(device) if count is None else None
    measure = (count is None and known is None and probe >= MIN_PROBE_BYTES and device is not None
               and not getattr(_behind, "on", False))
    if measure and pagecache.cached_share(files, (1 + sum(PROBE_COUNTS)) * probe) > 0.5:
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


def count_read(nbytes: int) -> None:
    """After each read call: a probe step is timed while all its readers are busy, not over its tail."""
    queue = getattr(_local, "queue", None)
    if queue is not None:
        with queue.lock:
            queue.read += nbytes


class _Queue:
    """Ranges handed out in order to the readers of one phase at a time; a failure stops them all."""

    def __init__(self, ranges: Sequence[Range]) -> None:
        self.ranges = list(ranges)
        self.results: list[dict] = [{} for _ in self.ranges]
        self.next = 0
        self.taken = 0          # bytes handed out in the current phase
        self.read = 0           # bytes read so far in the current phase
        self.window: tuple[int, float] | None = None    # (bytes read, time) when a reader ran dry
        self.budget: int | None = None
        self.failed = False
        self.lock = threading.Lock()

    def start_phase(self, budget: int | None) -> None:
        self.taken, self.read, self.window, self.budget = 0, 0, None, budget

    def ran_dry(self) -> None:
        with self.lock:
            if self.window is None:
                self.window = (self.read, time.perf_counter())

    def take(self) -> int | None:
        with self.lock:
            over = self.budget is not None and self.taken >= self.budget
            if self.failed or over or self.next >= len(self.ranges):
                return None
            index, self.next = self.next, self.next + 1
            self.taken += self.ranges[index].nbytes
            return index


def _phase(queue: _Queue, count: int, budget: int | None, open_reader) -> tuple[int, float]:
    """Read ranges with ``count`` threads until ``budget`` bytes are handed out (None: all); the
    bytes read and the seconds until the first reader that read anything ran out of ranges."""
    queue.start_phase(budget)
    started = time.perf_counter()

    def work() -> None:
        _local.queue, worked = queue, False
        try:
            with open_reader(threads) as reader:
                while (index := queue.take()) is not None:
                    queue.results[index] = reader.read(queue.ranges[index])
                    worked = True
                if worked:
                    queue.ran_dry()
        except BaseException:
            queue.failed = True
            raise
        finally:
            _local.queue = None

    threads = max(1, min(count, len(queue.ranges) - queue.next))
    if threads == 1:
        work()
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="wanvolume-read") as pool:
            for future in [pool.submit(work) for _ in range(threads)]:
                future.result()
    nbytes, at = queue.window or (queue.read, time.perf_counter())
    return nbytes, at - started
