"""hf download's own records of a ``--local-dir`` download: the Hub's hash of every file.

``hf download REPO --local-dir D`` writes, for each file it puts at ``D/<path>``,
``D/.cache/huggingface/download/<path>.metadata`` with three lines: the commit, the Hub's etag
and the time the record was written (huggingface_hub ``_local_folder.write_download_metadata``).
For an LFS file the etag is its SHA-256; for a small git file it is the git blob SHA-1. That is
the published hash, so a file that hashes to it is the published file.

Read here without huggingface_hub's ``read_download_metadata``: that one takes a lock file and
deletes records it cannot parse, and the volume may be read-only. Torch-free and cheap.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .hashing import Hasher

log = logging.getLogger(__name__)

DOWNLOAD_DIR = Path(".cache") / "huggingface" / "download"
SUFFIX = ".metadata"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubRecord:
    """One file's record; ``filename`` is its path in the repo (and under ``local_dir``)."""

    local_dir: Path
    filename: str
    commit: str
    etag: str
    timestamp: float

    @property
    def path(self) -> Path:
        return self.local_dir / self.filename

    @property
    def kind(self) -> str:
        """"sha256" (LFS file), "git-sha1" (small git file) or "unknown"."""
        if _SHA256.match(self.etag):
            return "sha256"
        return "git-sha1" if _SHA1.match(self.etag) else "unknown"

    def changed_since(self) -> bool:
        """huggingface_hub's own rule: the file's mtime is more than 1 s after the record."""
        try:
            return self.path.stat().st_mtime - 1 > self.timestamp
        except OSError:
            return False

    def found(self, hasher: Hasher) -> str:
        """The digest of the kind the record holds, from a hasher fed the whole file."""
        return hasher.git.hexdigest() if self.kind == "git-sha1" else hasher.sha256.hexdigest()

    def matches(self, hasher: Hasher) -> bool:
        return self.kind != "unknown" and self.found(hasher) == self.etag

    def mismatch(self, hasher: Hasher) -> str:
        """What differs, for error messages: expected vs found hash, and the size read."""
        what = "SHA-256" if self.kind != "git-sha1" else "git blob SHA-1"
        changed = (" (the file was modified after hf download wrote it)"
                   if self.changed_since() else "")
        return (f"its {what} is {self.found(hasher)} ({hasher.size} bytes) but hf download "
                f"recorded {self.etag} for {self.filename} at commit {self.commit[:12]}{changed}; "
                "the file was changed, truncated or replaced")


def record_path(local_dir: Path, filename: str) -> Path:
    return Path(local_dir) / DOWNLOAD_DIR / f"{filename}{SUFFIX}"


def read_record(local_dir: Path, filename: str) -> HubRecord | None:
    """The record for ``filename`` under ``local_dir``, or None (absent or unreadable)."""
    path = record_path(local_dir, filename)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        commit, etag, stamp = lines[0].strip(), lines[1].strip().strip('"'), float(lines[2])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError) as exc:
        log.warning("ignoring unreadable hf download record %s (%s)", path, exc)
        return None
    return HubRecord(Path(local_dir), filename, commit, etag, stamp)


def find_record(path: Path) -> HubRecord | None:
    """The record hf download wrote for the file ``path``, looking in every folder above it."""
    path = Path(path).absolute()
    for local_dir in path.parents:
        if (local_dir / DOWNLOAD_DIR).is_dir():
            return read_record(local_dir, path.relative_to(local_dir).as_posix())
    return None


def is_local_dir(folder: Path) -> bool:
    return (Path(folder) / DOWNLOAD_DIR).is_dir()


def records_in(local_dir: Path) -> list[HubRecord]:
    """Every record in a local dir whose file is still there, sorted by file name."""
    base = Path(local_dir) / DOWNLOAD_DIR
    out = []
    for meta in sorted(base.rglob(f"*{SUFFIX}")):
        filename = meta.relative_to(base).as_posix()[: -len(SUFFIX)]
        record = read_record(local_dir, filename)
        if record is not None and record.path.is_file():
            out.append(record)
    return out


def unfinished(local_dir: Path) -> list[Path]:
    """Partial downloads hf download left (``*.incomplete``): the download did not finish."""
    base = Path(local_dir) / DOWNLOAD_DIR
    return sorted(base.rglob("*.incomplete")) if base.is_dir() else []
