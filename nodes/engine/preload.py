"""Fill the volume once: resolve, check space, fetch each file, write the manifest, mark ready.

Order matters: the lock is taken first, the marker is cleared before any file changes, the
manifest is saved after every completed file, and the marker is written last.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import hub, manifest as mf
from .errors import WanVolumeError
from .fetch import FetchResult, RetryPolicy, fetch_file, part_path
from .lock import volume_lock
from .profiles import Source
from .progress import Progress, human_bytes, table

log = logging.getLogger(__name__)

# Tests and dry runs can pretend the volume has this many free bytes.
ENV_FREE_BYTES = "WAN_VOLUME_FREE_BYTES"


class VolumeNotWritable(WanVolumeError):
    """The models dir cannot be written (read-only mount, permissions)."""


class NotEnoughSpace(WanVolumeError):
    """The volume has less free space than the files still to fetch."""


@dataclass
class PreloadReport:
    name: str
    models_dir: Path
    results: list[FetchResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_fetched(self) -> int:
        return sum(r.bytes_fetched for r in self.results)

    def summary(self) -> str:
        rows = [(r.relpath, human_bytes(r.size), r.action, human_bytes(r.bytes_fetched),
                 f"{r.seconds:.1f}s", _rate(r.bytes_fetched, r.seconds), r.retries)
                for r in self.results]
        rows.append(("TOTAL", human_bytes(sum(r.size for r in self.results)), "",
                     human_bytes(self.bytes_fetched), f"{self.seconds:.1f}s",
                     _rate(self.bytes_fetched, self.seconds), sum(r.retries for r in self.results)))
        return table(("file", "size", "action", "fetched", "time", "rate", "retries"), rows)


def _rate(n: int, s: float) -> str:
    return f"{human_bytes(n / s)}/s" if s > 0 and n else "-"


def preload(name: str, sources: tuple[Source, ...], models_dir: Path, *, wait: bool = True,
            policy: RetryPolicy | None = None, show_progress: bool = True) -> PreloadReport:
    """Fetch ``sources`` into ``models_dir`` as the set ``name``; idempotent and resumable."""
    models_dir = Path(models_dir)
    policy = policy or RetryPolicy()
    started = time.monotonic()
    ensure_writable(models_dir)
    with volume_lock(models_dir, wait=wait):
        pins, files = hub.resolve(sources)
        man = mf.load_manifest(models_dir, name) or mf.Manifest(name)
        results, todo = _keep_what_matches(models_dir, man, files)
        if todo:
            check_free_space(models_dir, todo)
            mf.clear_marker(models_dir, name)      # nothing half-made looks complete
        man.sources = pins
        man.entries = {k: v for k, v in man.entries.items() if k in {f.relpath for f in files}}
        results += _fetch_all(models_dir, man, todo, policy, show_progress)
        mf.save_manifest(models_dir, man)
        mf.write_marker(models_dir, name)
    order = {f.relpath: i for i, f in enumerate(files)}
    results.sort(key=lambda r: order[r.relpath])
    return PreloadReport(name, models_dir, results, time.monotonic() - started)


def _keep_what_matches(models_dir: Path, man: mf.Manifest, files: list[hub.RemoteFile]
                       ) -> tuple[list[FetchResult], list[hub.RemoteFile]]:
    kept, todo = [], []
    for rf in files:
        final = models_dir / rf.relpath
        sha = _present_sha256(final, rf, man.entries.get(rf.relpath))
        if sha is None:
            todo.append(rf)
            continue
        man.entries[rf.relpath] = _entry(rf, sha)
        kept.append(FetchResult(rf.relpath, rf.size, sha, "kept"))
    return kept, todo


def _present_sha256(final: Path, rf: hub.RemoteFile, entry: mf.ManifestEntry | None) -> str | None:
    """The file's SHA-256 when it is already on the volume and matches the Hub, else None."""
    if not final.is_file() or final.stat().st_size != rf.size:
        return None
    if entry is not None and entry.size == rf.size and (
            entry.sha256 == rf.sha256 or (rf.sha256 is None and entry.revision == rf.commit)):
        return entry.sha256   # written and hashed by an earlier preload
    from .fetch import _Hasher, _matches   # a file someone copied in: hash it once
    hasher = _Hasher(rf.size)
    with open(final, "rb", buffering=0) as fh:
        while chunk := fh.read(mf.HASH_CHUNK):
            hasher.update(chunk)
    if _matches(rf, hasher):
        return hasher.sha256.hexdigest()
    log.warning("%s does not match the Hub's hash; fetching it again", final)
    return None


def _entry(rf: hub.RemoteFile, sha256: str) -> mf.ManifestEntry:
    return mf.ManifestEntry(rf.relpath, rf.size, sha256, rf.repo, rf.commit, rf.repo_path)


def _fetch_all(models_dir: Path, man: mf.Manifest, todo: list[hub.RemoteFile],
               policy: RetryPolicy, show_progress: bool) -> list[FetchResult]:
    parts = {rf.relpath: _part_size(models_dir / rf.relpath) for rf in todo}
    bar = Progress(sum(rf.size for rf in todo), len(todo), enabled=show_progress)
    bar.total.update(sum(parts.values()))
    out = []
    try:
        for rf in todo:
            bar.start_file(rf.relpath, rf.size, parts[rf.relpath])
            result = fetch_file(rf, models_dir / rf.relpath, policy, bar.update)
            man.entries[rf.relpath] = _entry(rf, result.sha256)
            mf.save_manifest(models_dir, man)
            log.info("%s: %s (%s fetched, %d retries)", rf.relpath, result.action,
                     human_bytes(result.bytes_fetched), result.retries)
            out.append(result)
    finally:
        bar.close()
    return out


def _part_size(final: Path) -> int:
    part = part_path(final)
    return part.stat().st_size if part.is_file() else 0


def free_bytes(models_dir: Path) -> int:
    override = os.environ.get(ENV_FREE_BYTES, "").strip()
    if override:
        return int(override)
    return shutil.disk_usage(models_dir).free


def check_free_space(models_dir: Path, todo: list[hub.RemoteFile]) -> None:
    """Fail before writing anything when the files still to fetch do not fit."""
    need = sum(rf.size - _part_size(models_dir / rf.relpath) for rf in todo)
    free = free_bytes(models_dir)
    if need > free:
        raise NotEnoughSpace(
            f"{human_bytes(need)} still to fetch but only {human_bytes(free)} free",
            field="--models-dir", value=str(models_dir),
            fix=f"grow the network volume by at least {human_bytes(need - free)} (RunPod: "
                "Storage > the volume > Expand), or pick a smaller profile such as comfy-720p-fp8")


def ensure_writable(models_dir: Path) -> None:
    """Create the state folder and write a probe; a read-only volume fails here, not mid-file."""
    probe = mf.state_dir(models_dir) / f".probe.{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        what = "read-only" if exc.errno == errno.EROFS else f"not writable ({exc.strerror})"
        raise VolumeNotWritable(
            f"the models dir is {what}", field="--models-dir", value=str(models_dir),
            fix="attach the network volume read-write (a Serverless endpoint can mount it "
                "read-only), or pass --models-dir a writable folder") from None
