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
