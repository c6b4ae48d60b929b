"""One writer per volume: an fcntl lock file in the models dir's state folder.

RunPod warns that several writers on one network volume can corrupt it; two preloads must never
write the same file. The lock is released by the kernel when the holder dies, even by SIGKILL. POSIX locks (lockf)
are used because they also work on network file systems; they do not exclude threads of one
process, so a process-wide threading lock is held too.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import WanVolumeError
from .manifest import state_dir

log = logging.getLogger(__name__)
_IN_PROCESS = threading.Lock()
_STATE = threading.RLock()          # the state lock's in-process half (re-entrant: marker in save)
_state_depth = threading.local()


class VolumeBusy(WanVolumeError):
    """Another preload holds the volume lock."""


def lock_path(models_dir: Path) -> Path:
    return state_dir(models_dir) / "preload.lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def volume_lock(models_dir: Path, wait: bool = True, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the volume's write lock; wait for it, or raise VolumeBusy when ``wait`` is False."""
    path = lock_path(models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _IN_PROCESS.acquire(blocking=wait):
        raise VolumeBusy("a preload in this process is writing to this volume", field="lock",
                         value=str(path), fix="wait for it to finish")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        _IN_PROCESS.release()
        raise
    try:
        _acquire(fd, path, wait, poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename} since {time.ctime()}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        _IN_PROCESS.release()


def _acquire(fd: int, path: Path, wait: bool, poll_s: float) -> None:
    told = False
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if not wait:
                raise VolumeBusy(f"another preload is writing to this volume ({_holder(path)})",
                                 field="lock", value=str(path),
                                 fix="wait for it to finish, or run again without --no-wait "
                                     "to queue behind it") from None
            if not told:
                log.warning("another preload holds %s (%s); waiting for it", path, _holder(path))
                told = True
            time.sleep(poll_s)


def holder(models_dir: Path) -> str | None:
    """Who holds the volume lock now ("pid 12 on host since ..."), or None when nobody does.

    A holder killed by SIGKILL leaves its line in the file; the kernel released its lock, so the
    line is stale: it is cleared here (once this process can take the lock) and not reported.
    On a read-only volume nothing can be tested: the file's line is returned as it is.
    """
    path = lock_path(models_dir)
    if not path.is_file():
        return None
    if not _IN_PROCESS.acquire(blocking=False):
        return _holder(path)            # a thread of this process is the writer
    try:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            text = _holder(path)
            return None if text == "unknown" else f"{text} (unconfirmed: read-only volume)"
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return _holder(path)
        try:
            if os.fstat(fd).st_size:
                os.ftruncate(fd, 0)     # a dead holder's line (an empty file is not written)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            os.close(fd)
        return None
    finally:
        _IN_PROCESS.release()


@contextmanager
def state_lock(models_dir: Path) -> Iterator[None]:
    """A short lock around one read-modify-write of a manifest or ready marker.

    Separate from the volume lock, which a preload holds for hours: verify, adopt and a server's
    hash check record entries meanwhile. Threads of this process wait on an RLock (a marker write
    inside a manifest update re-enters), processes on a POSIX lock of ``.wanvolume/state.lock``.
    Raises OSError where the state folder cannot be written (a read-only volume).
    """
    with _STATE:
        depth = getattr(_state_depth, "n", 0)
        if depth:
            _state_depth.n = depth + 1
            try:
                yield
            finally:
                _state_depth.n = depth
            return
        path = state_dir(models_dir) / "state.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            _state_depth.n = 1
            try:
                yield
            finally:
                _state_depth.n = 0
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
