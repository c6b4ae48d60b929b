"""The one reader of safetensors headers and shard indexes (no torch import: the CLI stays fast).

Every module that needs tensor names, shapes, offsets or a shard list reads them here.
"""
from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_HEADER = 100_000_000   # real headers are a few MB; anything larger is not a safetensors file


class HeaderError(ValueError):
    """A file whose safetensors header cannot be read or does not fit the file."""


@dataclass(frozen=True)
class RawTensor:
    name: str
    dtype: str                # safetensors dtype code: "BF16", "F32", "F8_E4M3", ...
    shape: tuple[int, ...]
    start: int                # absolute byte offsets in the file
    end: int


@dataclass(frozen=True)
class Header:
    path: Path
    length: int                          # bytes of the JSON header
    tensors: dict[str, RawTensor]
    metadata: dict[str, str]

    @property
    def data_end(self) -> int:
        """Where the last tensor ends: equals the file size for a complete file."""
        return max((t.end for t in self.tensors.values()), default=8 + self.length)


def read_header(path: Path | str) -> Header:
    """The parsed header of ``path``; ``HeaderError`` names the file when it is not one."""
    path = Path(path)
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            raw = fh.read(8)
            if len(raw) != 8:
                raise HeaderError(f"{path}: {len(raw)} bytes, too short for a safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > min(MAX_HEADER, size - 8):
                raise HeaderError(f"{path}: header length {length} does not fit the file "
                                  f"({size} bytes); not a safetensors file or truncated")
            header = json.loads(fh.read(length))
        base = 8 + length
        tensors = {}
        for name, rec in header.items():
            if name == "__metadata__":
                continue
            start, end = rec["data_offsets"]
            tensors[name] = RawTensor(name, rec["dtype"], tuple(rec["shape"]), base + start, base + end)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        if isinstance(exc, HeaderError):
            raise
        raise HeaderError(f"{path}: unreadable safetensors header ({exc})") from exc
    meta = header.get("__metadata__") or {}
    return Header(path, length, tensors, meta if isinstance(meta, dict) else {})


def open_regular(path: Path | str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (a link to one is fine).

    A FIFO named ``x.safetensors`` would block a plain ``open`` until something writes to it (on
    ComfyUI's event loop, the whole server); it is opened non-blocking, seen not to be a file,
    and closed unread. ``HeaderError`` names it.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise HeaderError(f"{path}: not a regular file ({_kind(mode)}); not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def truncation_problem(path: Path | str) -> str | None:
    """None when the header reads and the data ends exactly at the end of the file."""
    try:
        header = read_header(path)
    except HeaderError as exc:
        return str(exc).split(": ", 1)[-1]
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    size = Path(path).stat().st_size
    if header.data_end != size:
        return (f"safetensors header says {header.data_end} bytes, the file has {size} "
                "(truncated or padded)")
    return None


def shard_files(index_path: Path | str) -> list[str]:
    """The shard file names listed in a ``*.safetensors.index.json`` (sorted, unique)."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeaderError(f"{index_path}: unreadable shard index ({exc})") from exc
    return sorted(set(weight_map.values()))


def weight_files(path: Path | str) -> list[Path]:
    """The safetensors files that hold one component: a shard index's shards (listed even when
    absent, so checks can name them), a folder's (its shard index's shards if it has one, else
    every ``*.safetensors`` in it), or the file itself. The one place that lists shards."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        return weight_files(indexes[0]) if indexes else sorted(path.glob("*.safetensors"))
    if path.name.endswith(".index.json"):
        return [path.parent / n for n in shard_files(path)]
    return [path]
