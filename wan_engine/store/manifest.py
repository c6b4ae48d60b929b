"""Manifests: what a preload put on the volume, pinned to the Hub commit it came from.

Layout under a models dir::

    .wanvolume/manifests/<set>.json   every file fetched so far (relpath, size, sha256, repo, commit)
    .wanvolume/ready/<set>.json       the marker, written last: the set is complete and hashed
    .wanvolume/verify/<set>.json      the last `verify` result
    .wanvolume/preload.lock           one writer at a time (see lock.py)

The manifest is rewritten (atomically) after every completed file, so a killed preload keeps
what it finished; several download threads record through one ManifestWriter. A set is ready only when its marker exists and names the manifest's hash.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import hashing

log = logging.getLogger(__name__)

STATE_DIR = ".wanvolume"
ORIGIN_HF_LOCAL = "hf-local-dir"


@dataclass
class ManifestEntry:
    """One file on the volume; ``relpath`` is relative to the models dir."""

    relpath: str
    size: int
    sha256: str
    repo: str
    revision: str          # the resolved commit, never a branch name
    repo_path: str = ""    # the file's path inside the repo
    # st_mtime_ns when the hash was last checked (0: unknown). Same size and mtime: the file is
    # still the one hashed, so loaders need not read it again.
    mtime_ns: int = 0
    origin: str = ""       # "" (preload) or "hf-local-dir" (adopted from hf download's records)

    def vouches_for(self, path: Path) -> bool:
        """The record's hash still describes ``path`` (same size and mtime as when it was hashed)."""
        try:
            st = Path(path).stat()
        except OSError:
            return False
        return bool(self.mtime_ns) and st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


@dataclass
class SourcePin:
    repo: str
    requested: str         # what the user asked for ("main", a tag, a commit)
    commit: str            # what it resolved to


@dataclass
class Manifest:
    name: str
    sources: list[SourcePin] = field(default_factory=list)
    entries: dict[str, ManifestEntry] = field(default_factory=dict)   # keyed by relpath

    def to_json(self) -> dict:
        return {"name": self.name, "sources": [asdict(s) for s in self.sources],
                "entries": [asdict(e) for e in self.entries.values()]}

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        known = set(ManifestEntry.__dataclass_fields__)
        entries = [ManifestEntry(**{k: v for k, v in e.items() if k in known})
                   for e in data.get("entries", [])]
        return cls(name=data["name"], sources=[SourcePin(**s) for s in data.get("sources", [])],
                   entries={e.relpath: e for e in entries})

    def total_size(self) -> int:
        return sum(e.size for e in self.entries.values())


def state_dir(models_dir: Path) -> Path:
    return Path(models_dir) / STATE_DIR


def manifest_path(models_dir: Path, name: str) -> Path:
    return state_dir(models_dir) / "manifests" / f"{_safe(name)}.json"


def marker_path(models_dir: Path, name: str) -> Path:
    return state_dir(models_dir) / "ready" / f"{_safe(name)}.json"


def verify_path(models_dir: Path, name: str) -> Path:
    return state_dir(models_dir) / "verify" / f"{_safe(name)}.json"


def _safe(name: str) -> str:
    return name.replace("/", "--")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write, fsync, rename: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_manifest(models_dir: Path, name: str) -> Manifest | None:
    return _read_manifest(manifest_path(models_dir, name))


def _read_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable manifest %s (%s)", path, exc)
        return None


def save_manifest(models_dir: Path, manifest: Manifest) -> None:
    write_json_atomic(manifest_path(models_dir, manifest.name), manifest.to_json())


@dataclass
class ManifestWriter:
    """Records finished files from several download threads.

    One lock covers change-and-save (read-modify-write of the in-memory manifest, then an atomic
    replace on disk), so two threads never interleave and the file on disk always lists exactly
    the entries recorded so far. Record a file only after its atomic rename.
    """

    models_dir: Path
    manifest: Manifest
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, entry: ManifestEntry) -> None:
        with self._lock, _state_lock(self.models_dir):
            self.manifest.entries[entry.relpath] = entry
            save_manifest(self.models_dir, self.manifest)

    def save(self) -> None:
        with self._lock, _state_lock(self.models_dir):
            save_manifest(self.models_dir, self.manifest)


def _state_lock(models_dir: Path):
    from .lock import state_lock    # lock.py imports this module
    return state_lock(models_dir)


def manifest_digest(models_dir: Path, name: str) -> str:
    return hashlib.sha256(manifest_path(models_dir, name).read_bytes()).hexdigest()


def write_marker(models_dir: Path, name: str) -> None:
    """Mark a set ready. Call only after every file is in place and the manifest is saved."""
    with _state_lock(models_dir):
        write_json_atomic(marker_path(models_dir, name),
                          {"name": name, "manifest_sha256": manifest_digest(models_dir, name),
                           "completed_at": time.time()})


def clear_marker(models_dir: Path, name: str) -> None:
    """Unmark a set (a preload is about to change it); no manifest update in flight revives it."""
    with _state_lock(models_dir):
        marker_path(models_dir, name).unlink(missing_ok=True)


def is_marked_ready(models_dir: Path, name: str) -> bool:
    """The marker exists and belongs to the manifest as it is now."""
    try:
        marker = json.loads(marker_path(models_dir, name).read_text(encoding="utf-8"))
        return marker.get("manifest_sha256") == manifest_digest(models_dir, name)
    except (OSError, ValueError):
        return False


def list_manifests(models_dir: Path) -> list[Manifest]:
    folder = state_dir(models_dir) / "manifests"
    if not folder.is_dir():
        return []
    found = (_read_manifest(p) for p in sorted(folder.glob("*.json")))
    return [m for m in found if m is not None]


def unfinished_preload(models_dir: Path, folder: Path) -> tuple[str, str] | None:
    """(what is unfinished, the manifest's name) when a preload is writing ``folder`` or was
    killed there: a manifest (not an adoption) lists files below it but has no valid ready
    marker, or ``*.part`` files lie below it. None when no preload is unfinished there."""
    prefix = f"{Path(folder).name}/"
    for man in list_manifests(models_dir):
        if not any(rel.startswith(prefix) for rel in man.entries):
            continue
        if all(e.origin == ORIGIN_HF_LOCAL for e in man.entries.values()):
            continue    # adopted from hf download's records: no marker is written for it
        if is_marked_ready(models_dir, man.name):
            return None     # the preload finished: a stray .part beside it is not a download
        parts = part_files(folder)
        return (f"pre-load not finished: {len(man.entries)} file(s) recorded, no ready marker"
                f"{f', {len(parts)} partial (.part) file(s)' if parts else ''}", man.name)
    parts = part_files(folder)
    if parts:
        return (f"pre-load not finished: {len(parts)} partial (.part) file(s), e.g. "
                f"{parts[0].relative_to(folder).as_posix()}", "")
    return None


def part_files(folder: Path) -> list[Path]:
    """Partial downloads (fetch.part_path) below ``folder``."""
    return sorted(p for p in Path(folder).rglob("*.part") if p.is_file())


@dataclass
class Located:
    """Where a file's manifest entry lives."""

    models_dir: Path
    name: str
    entry: ManifestEntry


def locate(path: Path) -> Located | None:
    """The manifest entry written for ``path`` (by a preload, verify or adopt), or None.

    Looks in every models dir above ``path`` that holds a ``.wanvolume`` folder.
    """
    path = Path(path).absolute()
    for root in path.parents:
        if not (root / STATE_DIR / "manifests").is_dir():
            continue
        rel = path.relative_to(root).as_posix()
        for manifest in list_manifests(root):
            entry = manifest.entries.get(rel)
            if entry is not None:
                return Located(root, manifest.name, entry)
    return None


def find_manifest_entry(path: Path) -> ManifestEntry | None:
    """The manifest entry a preload wrote for ``path``, or None if no preload wrote it."""
    found = locate(path)
    return found.entry if found else None


def mtime_ns(path: Path) -> int:
    return Path(path).stat().st_mtime_ns


def file_sha256(path: Path, progress: object | None = None) -> str:
    """SHA-256 of a file (hashing.py's loop); ``progress`` is anything with ``update(n)``."""
    return hashing.file_sha256(Path(path), progress.update if progress is not None else None)  # type: ignore[attr-defined]


def sha256_matches(path: Path) -> bool:
    """Hash ``path`` and compare with its manifest entry; False when absent or not pre-loaded."""
    entry = find_manifest_entry(path)
    if entry is None or not Path(path).is_file():
        return False
    if Path(path).stat().st_size != entry.size:
        return False
    return file_sha256(Path(path)) == entry.sha256


def record_entries(models_dir: Path, name: str, entries: list[ManifestEntry],
                   sources: list[SourcePin] | None = None) -> None:
    """Add or refresh ``entries`` in the manifest ``name``; a ready marker stays valid.

    Used after a hash check (verify, adopt, the .pth check at load) to remember the result. The
    read, the change and the save happen under the state lock, so entries other processes
    recorded meanwhile are kept, and a marker a preload cleared is not written back. A torn
    manifest is not overwritten (its entries would be lost): OSError, and ``check`` names it.
    """
    models_dir = Path(models_dir)
    with _state_lock(models_dir):
        if manifest_problem(manifest_path(models_dir, name)):
            raise OSError(errno.EIO, "unreadable manifest, not overwritten",
                          str(manifest_path(models_dir, name)))
        man = load_manifest(models_dir, name) or Manifest(name)
        was_ready = man.entries and is_marked_ready(models_dir, name)
        for entry in entries:
            man.entries[entry.relpath] = entry
        for pin in sources or []:
            if all(p.repo != pin.repo for p in man.sources):
                man.sources.append(pin)
        save_manifest(models_dir, man)
        if was_ready:
            write_marker(models_dir, name)


def manifest_problem(path: Path) -> str | None:
    """Why the manifest at ``path`` cannot be read (torn, empty, not ours); None if it reads or is absent."""
    try:
        Manifest.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def broken_manifests(models_dir: Path) -> dict[str, str]:
    """Manifests that exist but cannot be read: set name -> why."""
    folder = state_dir(models_dir) / "manifests"
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.glob("*.json")):
        problem = manifest_problem(p)
        if problem:
            out[p.stem.replace("--", "/")] = problem
    return out
