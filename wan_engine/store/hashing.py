"""The one hashing loop: SHA-256 (and the git blob SHA-1 the Hub gives for small files) of a file.

Used by verify, preload's present-file check, adopt and the .pth check at load time; fetch.py
feeds the same ``Hasher`` while it downloads. Large sequential reads are what network volumes
are fast at, so the chunk is 8 MiB.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

CHUNK = 8 * 1024 * 1024


class Hasher:
    """SHA-256 plus the git blob SHA-1 (``sha1(b"blob <size>\\0" + content)``) of ``size`` bytes."""

    def __init__(self, size: int, git: bool = True) -> None:
        self.size = size
        self.with_git = git      # off: SHA-256 only (the git id costs a second pass of CPU)
        self.reset()

    def reset(self) -> None:
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(f"blob {self.size}\0".encode())

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.with_git:
            self.git.update(data)


def feed(hasher, path: Path, on_bytes: Callable[[int], None] | None = None) -> int:
    """Read ``path`` into ``hasher`` (anything with ``update(bytes)``); returns the bytes read."""
    done = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return done


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None,
              git: bool = True) -> Hasher:
    """The SHA-256 (and, with ``git``, the git blob id) of ``path`` in one read."""
    hasher = Hasher(Path(path).stat().st_size, git)
    feed(hasher, Path(path), on_bytes)
    return hasher


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """SHA-256 only (cheaper than ``hash_file`` when the git id is not needed)."""
    digest = hashlib.sha256()
    feed(digest, Path(path), on_bytes)
    return digest.hexdigest()
