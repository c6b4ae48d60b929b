"""What is known about a file's content without hashing it: verified, Hub-recorded, unknown, bad.

- ``verified``: a manifest entry (preload, verify, adopt, or the .pth check at load) hashed it and
  the file still has the size and mtime it had then;
- ``hub-metadata``: hf download recorded the Hub's hash for it (not hashed by us yet; the
  loader hashes a .pth once, ``wanvolume.py adopt`` hashes the whole folder);
- ``unknown``: filled by hand, nothing to compare with;
- ``bad``: a header that cannot be right (truncated safetensors, torch zip without end record),
  a size that differs from the record, or a file modified after hf download wrote it.

A header sniff never overrides a verified hash: a verified file is not sniffed at all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import headers, hf_local
from . import manifest as mf

ZIP_MAGIC = b"PK\x03\x04"
ZIP_END = b"PK\x05\x06"
STATES = ("verified", "hub-metadata", "unknown", "bad")


@dataclass
class FileState:
    path: Path
    state: str
    problem: str | None = None


def index(models_dir: Path) -> dict[Path, mf.ManifestEntry]:
    """Every manifest entry under ``models_dir`` by absolute path."""
    models_dir = Path(models_dir).absolute()
    return {models_dir / e.relpath: e for m in mf.list_manifests(models_dir)
            for e in m.entries.values()}


def header_problem(path: Path) -> str | None:
    """A sniff only where it is certain: safetensors, torch zip .pth/.pt, JSON. Else None."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return headers.header_facts(path)[0]   # cached per (path, size, mtime): status asks often
    try:
        if suffix in (".pth", ".pt"):
            return _torch_zip_problem(path)
        if suffix == ".json" and path.stat().st_size < 50_000_000:
            json.loads(path.read_bytes())
    except ValueError:
        return "not valid JSON"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return None


def _torch_zip_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head[:1] == b"\x80":
            return None  # legacy (non-zip) pickle: nothing certain to check
        if head != ZIP_MAGIC:
            return "not a torch zip file (bad magic)"
        fh.seek(max(0, size - 65_557))
        return None if ZIP_END in fh.read() else "torch zip file has no end record (truncated)"


def file_state(path: Path, entries: dict[Path, mf.ManifestEntry]) -> FileState:
    path = Path(path).absolute()
    entry = entries.get(path)
    if entry is not None and entry.vouches_for(path):
        return FileState(path, "verified")
    if entry is not None:
        try:
            size = path.stat().st_size
        except OSError:
            return FileState(path, "bad", "missing")
        if size != entry.size:
            return FileState(path, "bad", f"size {size} bytes, expected {entry.size}")
    record = hf_local.find_record(path)
    if record is not None and record.changed_since():
        return FileState(path, "bad", "modified after hf download wrote it "
                                      "(`python wanvolume.py verify` compares its hash)")
    problem = header_problem(path)
    if problem:
        return FileState(path, "bad", problem)
    if entry is not None:   # right size, hashed once, touched since: still the preload's file?
        return FileState(path, "unknown")
    return FileState(path, "hub-metadata" if record is not None else "unknown")


def set_state(files: list[Path], entries: dict[Path, mf.ManifestEntry]
              ) -> tuple[str, dict[str, str]]:
    """The weakest state of ``files`` (and shards) and the problems of the bad ones."""
    states = [file_state(f, entries) for f in files]
    bad = {str(s.path): s.problem or "" for s in states if s.state == "bad"}
    if not states:
        return "unknown", bad
    worst = max(STATES.index(s.state) for s in states)
    return STATES[worst], bad
