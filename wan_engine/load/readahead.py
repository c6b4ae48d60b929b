"""Read a set from the volume once, ahead of the load that takes it, so the volume never idles.

A cold load reads a component, builds it, then reads the next: while modules are built (the small
parts' ``from_pretrained``, the DiT's assignment) and while the last slices convert, the volume
waits. The read-ahead reads the set's files in the order the load takes them (small files, the
encoders, the VAE, then the DiT) on its own threads, as many as the volume rewards (readers.py
measures them on its first ranges), into the page cache. The load's reads (fastload) wait span by
span behind it (``wait_for``) and then copy from memory, so only the read-ahead's streams ask the
volume and their count is measured undisturbed; the load's wall time comes close to the read
bound (bytes / the volume's speed). Files of a Hugging Face cache that were never hashed are
hashed in the same pass (one sequential stream per file, as a hash needs); the load does not wait
behind a hash (its readers may outrun one stream, and the hash then reads from the page cache),
but it waits for the verdict before the set is used (``finish``): one read of the volume, not a
hash pass and then a load.

Each byte is read from the volume once only while the page cache keeps what was read ahead
until the load takes it, so the read-ahead stays at most ``window`` bytes ahead of the load
(half the RAM available when it starts, less the set's size, at least ``MIN_WINDOW``); while it
waits on that window the load reads on its own. On a volume whose pages are not cached (a
``direct_io`` FUSE mount) reading ahead would read twice: it stops after its first ranges and the
load reads alone. ``WAN_VOLUME_READAHEAD=off`` turns it off (on by default).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import InvalidInput
from ..store import hf_verify
from ..store.modelset import ModelSet
from . import pagecache, readers

log = logging.getLogger(__name__)

ENV_READAHEAD = "WAN_VOLUME_READAHEAD"
ORDER = ("tokenizer", "text_encoder", "image_encoder", "vae", "transformer", "transformer_2")
SPAN_BYTES = 8 * 2**20          # a read-ahead range is made of spans this size (one read call each)
MIN_WINDOW = 2 * 2**30          # the read-ahead may always be this far ahead of the load
BUFFER = 2**20


@dataclass(frozen=True)
class _Span:
    start: int
    end: int


def setting(environ: Mapping[str, str] = os.environ) -> bool:
    """``WAN_VOLUME_READAHEAD``: on (unset, blank, auto, on, 1) or off (off, 0)."""
    raw = environ.get(ENV_READAHEAD)
    value = (raw or "").strip().lower() or "auto"
    if value in ("auto", "on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise InvalidInput("is not a read-ahead setting (allowed: auto, on, off)", field=ENV_READAHEAD,
                       value=raw, fix=f"set {ENV_READAHEAD}=off to let the load read alone, or unset it")


def order_key(component: str) -> int:
    """Where a component comes in a load: ``ORDER``'s, any other first (small parts)."""
    return ORDER.index(component) if component in ORDER else -1


def load_order(model_set: ModelSet) -> list[Path]:
    """The set's files in the order a load takes them: ``ORDER``'s components, then any other."""
    out: list[Path] = []
    for name in sorted(model_set.components, key=order_key):
        out += sorted(model_set.component_files(name), key=lambda f: (f.suffix == ".safetensors", f.name))
    return [f for f in dict.fromkeys(out) if f.is_file()]


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo (bytes), None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def window_for(set_bytes: int, ram: int | None) -> int:
    """How far ahead of the load the read-ahead may be: half the RAM the set leaves, at least
    ``MIN_WINDOW`` (unknown RAM: the whole set)."""
    if ram is None:
        return max(set_bytes, MIN_WINDOW)
    return max(MIN_WINDOW, (ram - set_bytes) // 2)


class ReadAhead:
    """One load's read-ahead: enter it, let ``consumed()`` say how far the load has read, then
    ``finish`` (waits for the hashes; re-raises a mismatch). Leaving the block stops whatever still
    runs (a failed load does not wait for a hash). ``enabled=False`` (``WAN_VOLUME_READAHEAD=off``):
    entering hashes the first use's files at once, before the load, and reads nothing ahead."""

    def __init__(self, files: Sequence[Path], hashed: Sequence[Path] = (), window: int | None = None,
                 consumed: Callable[[], int] | None = None,
                 on_hash_bytes: Callable[[int], None] | None = None, enabled: bool = True) -> None:
        self.files = [Path(f) for f in files]
        self.hashed = {Path(f) for f in hashed}
        self.enabled = enabled
        size = sum(f.stat().st_size for f in self.files)
        self.window = window if window is not None else window_for(size, available_ram())
        self.consumed = consumed or (lambda: 0)
        self.on_hash_bytes = on_hash_bytes
        self.ahead = 0                   # bytes read ahead so far
        self.hash_seconds = 0.0
        self.stopped = threading.Event()
        self.no_cache = False            # the volume keeps no page cache: the load reads alone
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._behind = contextlib.ExitStack()
        # what the load may read already: the span indices read ahead, per file
        self._cond = threading.Condition()
        self._keys: dict[str, tuple[int, int] | None] = {}
        self._done: dict[tuple[int, int], set[int]] = {}
        # the load waits behind the plain read-ahead only: a hash is one stream, which the load's
        # own readers may outrun (the hash then reads what they brought into the page cache)
        self._pending = {k for f in self.files if f not in self.hashed and (k := self._key(f)) is not None}
        self._holding = 0                # readers waiting on the window: the load must not wait then

    def __enter__(self) -> "ReadAhead":
        global _leading
        if not self.enabled:
            started = time.perf_counter()
            hf_verify.check_files([f for f in self.files if f in self.hashed], self.on_hash_bytes)
            self.hash_seconds = time.perf_counter() - started
            return self
        _leading = self
        self._behind.enter_context(readers.behind_readahead())   # the load's thread times nothing
        self._threads = [threading.Thread(target=self._read_plain, name="wanvolume-readahead", daemon=True),
                         threading.Thread(target=self._hash_all, name="wanvolume-readahead-hash", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        global _leading
        if _leading is self:
            _leading = None
        self._behind.close()
        self.stopped.set()
        self._wake()
        self._join()

    def finish(self) -> None:
        """Wait for the hashes (the load's reads are done: what is left of the read-ahead stops);
        a hash mismatch or a failed hash read raises here."""
        if self._threads:
            self._threads[1].join()
        self.stopped.set()
        self._wake()
        self._join()
        if self.error is not None:
            raise self.error

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    # -- the reading threads -----------------------------------------------------------------
    def _read_plain(self) -> None:
        plain = [f for f in self.files if f not in self.hashed]
        started = time.perf_counter()
        try:
            if plain:
                readers.read_all([(f, _spans(f)) for f in plain], lambda threads: _Discard(self))
                seconds = time.perf_counter() - started
                log.info("read-ahead: %d files, %.0f MB in %.2f s (%.0f MB/s)", len(plain), self.ahead / 1e6,
                         seconds, self.ahead / 1e6 / max(seconds, 1e-9))
        except _Stop:
            pass
        except OSError as exc:      # the load reads the file itself and names what is wrong
            log.warning("read-ahead stopped: %s", exc)
        finally:
            self._release(plain)

    def _hash_all(self) -> None:
        started = time.perf_counter()
        try:
            for f in (f for f in self.files if f in self.hashed):
                hf_verify.check_file(f, self._hash_read)
        except _Stop:
            pass
        except BaseException as exc:   # noqa: BLE001 - a mismatch (or a failed read) is the load's
            self.error = exc
        finally:
            self.hash_seconds += time.perf_counter() - started

    def _hash_read(self, nbytes: int) -> None:
        if self.on_hash_bytes is not None:
            self.on_hash_bytes(nbytes)
        self.advance(nbytes)

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` read ahead; wait while the read-ahead is a window ahead of the load."""
        with self._lock:
            self.ahead += nbytes
            ahead = self.ahead
        if ahead - self.consumed() > self.window and not self.stopped.is_set():
            with self._cond:
                self._holding += 1
                self._cond.notify_all()
            try:
                while ahead - self.consumed() > self.window and not self.stopped.is_set():
                    time.sleep(0.01)
            finally:
                with self._cond:
                    self._holding -= 1
        if self.stopped.is_set():
            raise _Stop

    # -- the load's side -----------------------------------------------------------------------
    def wait_for(self, path: Path, start: int, end: int) -> None:
        """Before the load reads ``[start, end)`` of ``path``: wait until the read-ahead has read
        it, so only the read-ahead's streams (their count measured undisturbed) ask the volume and
        each byte once. Never while the read-ahead cannot go on: it waits on its window, has
        stopped, keeps no page cache, or that file is not (or no longer) its to read."""
        key = self._key(path)
        with self._cond:
            while (key in self._pending and not self._covered(key, start, end) and not self._holding
                   and not self.stopped.is_set() and not self.no_cache):
                self._cond.wait(0.05)

    def mark(self, path: Path, start: int) -> None:
        """The span that starts at ``start`` of ``path`` is in the page cache."""
        key = self._key(path)
        with self._cond:
            self._done.setdefault(key, set()).add(start // SPAN_BYTES)
            self._cond.notify_all()

    def _covered(self, key, start: int, end: int) -> bool:
        done = self._done.get(key, ())
        return all(i in done for i in range(start // SPAN_BYTES, max(start, end - 1) // SPAN_BYTES + 1))

    def _release(self, files: Iterable[Path]) -> None:
        with self._cond:
            self._pending -= {self._key(f) for f in files}
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _key(self, path: Path) -> tuple[int, int] | None:
        text = str(path)
        if text not in self._keys:
            try:
                st = os.stat(text)
                self._keys[text] = (st.st_dev, st.st_ino)
            except OSError:
                self._keys[text] = None
        return self._keys[text]


_leading: ReadAhead | None = None     # the running load's read-ahead (one load at a time: assemble's lock)


def wait_for(path: Path, start: int, end: int) -> None:
    """The load's reads call this: wait for the running load's read-ahead, if any (see the method)."""
    leading = _leading
    if leading is not None:
        leading.wait_for(path, start, end)


class _Stop(Exception):
    """The load ended (or failed) before the read-ahead: its threads leave quietly."""


class _Discard:
    """A readers.py reader that reads ranges into one buffer and drops the bytes (page cache only)."""

    def __init__(self, owner: ReadAhead) -> None:
        self.owner = owner
        self.buf = bytearray(BUFFER)
        self.handles: dict[Path, object] = {}
        self.checked = False

    def __enter__(self) -> "_Discard":
        return self

    def __exit__(self, *exc) -> None:
        for fh in self.handles.values():
            fh.close()

    def read(self, rng: readers.Range) -> dict:
        if self.owner.stopped.is_set() or self.owner.no_cache:
            raise _Stop
        fh = self.handles.get(rng.path)
        if fh is None:
            fh = self.handles[rng.path] = open(rng.path, "rb", buffering=0)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        view = memoryview(self.buf)
        for span, _ in rng.items:
            fh.seek(span.start)
            left = span.end - span.start
            while left:
                n = fh.readinto(view[:min(left, BUFFER)])
                if not n:
                    return {}            # a short file: the load's own read names it
                left -= n
                readers.count_read(n)
            self.owner.mark(rng.path, span.start)
            self.owner.advance(span.end - span.start)
        if not self.checked:
            self.checked = True
            first = rng.items[0][0]
            if pagecache.resident_share([(rng.path, first.start), (rng.path, first.end - 1)]) == 0:
                self.owner.no_cache = True
                self.owner._wake()
                log.info("read-ahead off: %s keeps no page cache (the load reads alone)", rng.path)
                raise _Stop
        return {}


def _spans(path: Path) -> list[tuple[_Span, None]]:
    size = path.stat().st_size
    return [(_Span(s, min(size, s + SPAN_BYTES)), None) for s in range(0, size, SPAN_BYTES)]
