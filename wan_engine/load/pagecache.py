"""Whether a file's pages are in the page cache, without reading them (mincore on a one-page map).

readers.py asks before it times a load's first reads: bytes a prefetch already brought in would
measure memory, not the volume. Where it cannot tell (no libc mincore, a file that cannot be
mapped, such as a direct_io FUSE file that has no page cache), a page counts as not resident.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path
from typing import Any, Iterable, Sequence


def cached_share(files: Sequence[tuple[Path, Sequence[tuple[Any, Any]]]], nbytes: int,
                 samples: int = 16) -> float:
    """The share of pages, sampled over a load's first ``nbytes``, already in the page cache.

    ``files``: (path, (span, _) items in file order; a span has ``start`` and ``end``): readers.py's
    input. A prefetch or an earlier load may have read those bytes: timing them would measure
    memory, and the reader count chosen would be wrong for the volume."""
    points, seen = [], 0
    wanted = [i * nbytes // samples for i in range(samples)]
    for path, items in files:
        for span, _ in items:
            size = span.end - span.start
            while wanted and wanted[0] < seen + size:
                points.append((path, span.start + wanted.pop(0) - seen))
            seen += size
    return resident_share(points)


def resident_share(points: Iterable[tuple[Path, int]]) -> float:
    """The share of (file, byte offset) points whose page is in the page cache (0 for none)."""
    points = list(points)
    return sum(_resident(path, offset) for path, offset in points) / len(points) if points else 0.0


def _resident(path: Path, offset: int) -> bool:
    """Whether the page holding ``offset`` of ``path`` is in the page cache."""
    libc = _libc()
    if libc is None:
        return False
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, page, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset - offset % page)
        if addr in (None, ctypes.c_void_p(-1).value):      # e.g. a direct_io FUSE file: no page cache
            return False
        try:
            vec = (ctypes.c_ubyte * 1)()
            return libc.mincore(ctypes.c_void_p(addr), page, vec) == 0 and bool(vec[0] & 1)
        finally:
            libc.munmap(ctypes.c_void_p(addr), page)
    finally:
        os.close(fd)


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long]
            libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            _LIBC.append(libc if hasattr(libc, "mincore") else None)
        except (OSError, AttributeError):
            _LIBC.append(None)
    return _LIBC[0]
