"""Fill the volume once: resolve, check space, fetch the files, write the manifest, mark ready.

Order matters: the lock is taken first, the marker is cleared before any file changes, the
manifest is saved after every completed file, and the marker is written last, only when every
file succeeded. Files are fetched ``workers`` at a time from a thread pool because the Hub serves
each connection at a limited rate; each thread owns one file's part and records it when renamed.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from . import hashing, hub, manifest as mf
from ..errors import WanVolumeError
from .fetch import FetchCancelled, FetchFailed, FetchResult, RetryPolicy, fetch_file, part_path
from .lock import volume_lock
from .profiles import Source
from .progress import FileBar, TransferBars, human_bytes, table

log = logging.getLogger(__name__)

# Tests and dry runs can pretend the volume has this many free bytes.
ENV_FREE_BYTES = "WAN_VOLUME_FREE_BYTES"
DEFAULT_WORKERS = 4   # files in flight; huggingface_hub's snapshot_download uses 8


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
            policy: RetryPolicy | None = None, show_progress: bool = True,
            workers: int = DEFAULT_WORKERS) -> PreloadReport:
    """Fetch ``sources`` into ``models_dir`` as the set ``name``; idempotent and resumable.

    Up to ``workers`` files download at once (1: one after the other). If a file fails, no queued
    file starts, the ones in flight finish and are kept, and the error names every failed file.
    """
    models_dir = Path(models_dir)
    policy = policy or RetryPolicy()
    if workers < 1:
        raise WanVolumeError("need at least one download worker", field="--workers",
                             value=workers,
                             fix=f"pass --workers 1 or more (default {DEFAULT_WORKERS})")
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
        writer = mf.ManifestWriter(models_dir, man)
        results += _fetch_all(writer, todo, policy, show_progress, workers)
        man.entries = {f.relpath: man.entries[f.relpath] for f in files}  # repo order
        writer.save()
        mf.write_marker(models_dir, name)          # reached only when every file succeeded
    order = {f.relpath: i for i, f in enumerate(files)}
    results.sort(key=lambda r: order[r.relpath])
    return PreloadReport(name, models_dir, results, time.monotonic() - started)


def _keep_what_matches(models_dir: Path, man: mf.Manifest, files: list[hub.RemoteFile]
                       ) -> tuple[list[FetchResult], list[hub.RemoteFile]]:
    kept, todo = [], []
    for rf in files:
        final = models_dir / rf.relpath
        entry = man.entries.get(rf.relpath)
        sha = _present_sha256(final, rf, entry)
        if sha is None:
            todo.append(rf)
            continue
        man.entries[rf.relpath] = new = _entry(rf, sha, final)
        if entry is not None and _recorded(entry, rf) and not entry.mtime_ns:
            new.mtime_ns = 0   # an older manifest's entry, kept unhashed: vouch for nothing new
        kept.append(FetchResult(rf.relpath, rf.size, sha, "kept"))
    return kept, todo


def _present_sha256(final: Path, rf: hub.RemoteFile, entry: mf.ManifestEntry | None) -> str | None:
    """The file's SHA-256 when it is already on the volume and matches the Hub, else None."""
    if not final.is_file() or final.stat().st_size != rf.size:
        return None
    if entry is not None and _recorded(entry, rf) and (
            entry.vouches_for(final) or not entry.mtime_ns):
        return entry.sha256   # written and hashed by an earlier preload (and not touched since)
    from .fetch import matches    # a file someone copied in: hash it once
    hasher = hashing.hash_file(final, git=rf.sha256 is None)
    if matches(rf, hasher):
        return hasher.sha256.hexdigest()
    log.warning("%s does not match the Hub's hash; fetching it again", final)
    return None


def _recorded(entry: mf.ManifestEntry, rf: hub.RemoteFile) -> bool:
    """The manifest entry describes the Hub's file (same size and hash, or commit for git files)."""
    return entry.size == rf.size and (
        entry.sha256 == rf.sha256 or (rf.sha256 is None and entry.revision == rf.commit))


def _entry(rf: hub.RemoteFile, sha256: str, final: Path) -> mf.ManifestEntry:
    """The record of a file whose hash was just checked; its mtime lets loaders skip re-hashing."""
    return mf.ManifestEntry(rf.relpath, rf.size, sha256, rf.repo, rf.commit, rf.repo_path,
                            mtime_ns=mf.mtime_ns(final))


@dataclass
class _Batch:
    """What every download thread shares: manifest writer, progress bars, stop and failure flags."""

    writer: mf.ManifestWriter
    policy: RetryPolicy
    bar: TransferBars
    stop: threading.Event = field(default_factory=threading.Event)     # Ctrl-C: end all now
    failed: threading.Event = field(default_factory=threading.Event)   # start no queued file

    def fetch_one(self, rf: hub.RemoteFile, already: int, queued: bool) -> FetchResult | None:
        """Runs in a pool thread: fetch, then record the renamed file. None: not started.

        The first ``workers`` files are handed out together and always run (whether their
        threads are already running when another file fails is timing); ``queued`` ones wait
        for a free worker and do not start once a file has failed.
        """
        if self.stop.is_set() or (queued and self.failed.is_set()):
            return None
        file_bar: FileBar = self.bar.start_file(rf.relpath, rf.size, already)
        renamed = False
        try:
            result = fetch_file(rf, self.writer.models_dir / rf.relpath, self.policy,
                                file_bar.update, self.stop)
            renamed = True
            self.writer.add(_entry(rf, result.sha256, self.writer.models_dir / rf.relpath))
        except BaseException as exc:
            if not isinstance(exc, FetchCancelled):
                self.failed.set()      # set before this future resolves: no queued file starts
            raise
        finally:
            file_bar.close(finished=renamed)
        log.info("%s: %s (%s fetched, %d retries)", rf.relpath, result.action,
                 human_bytes(result.bytes_fetched), result.retries)
        return result


def _fetch_all(writer: mf.ManifestWriter, todo: list[hub.RemoteFile], policy: RetryPolicy,
               show_progress: bool, workers: int) -> list[FetchResult]:
    if not todo:
        return []
    parts = {rf.relpath: _part_size(writer.models_dir / rf.relpath) for rf in todo}
    workers = min(workers, len(todo))
    bar = TransferBars(sum(rf.size for rf in todo), len(todo), enabled=show_progress, slots=workers,
                   already=sum(parts.values()))
    batch = _Batch(writer, policy, bar)
    if workers > 1:   # largest first: a big file started last would finish alone at the end
        todo = sorted(todo, key=lambda rf: rf.size - parts[rf.relpath], reverse=True)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="preload") as pool:
            futures = {pool.submit(batch.fetch_one, rf, parts[rf.relpath], i >= workers): rf
                       for i, rf in enumerate(todo)}
            try:
                results, failed, not_started = _collect(futures)
            except BaseException:      # Ctrl-C: every thread stops at its next chunk
                batch.stop.set()
                raise
    finally:
        bar.close()
    _raise_failures(failed, not_started)
    return results


def _collect(futures: dict[Future, hub.RemoteFile]
             ) -> tuple[list[FetchResult], dict[str, BaseException], list[str]]:
    """Results, failures (relpath: exception) and files not started, as the threads finish."""
    results: list[FetchResult] = []
    failed: dict[str, BaseException] = {}
    not_started: list[str] = []
    for fut in as_completed(futures):
        rel, exc = futures[fut].relpath, fut.exception()
        if exc is not None:
            failed[rel] = exc
            log.error("%s failed: %s", rel, exc)
        elif fut.result() is None:
            not_started.append(rel)
        else:
            results.append(fut.result())
    return results, failed, not_started


def _raise_failures(failed: dict[str, BaseException], not_started: list[str]) -> None:
    """Raise naming every failed file; a single failure is raised as it was (its type: exit code)."""
    if not failed:
        return
    if not_started:
        log.warning("not started after the failure (a rerun fetches them): %s",
                    ", ".join(not_started))
    if len(failed) == 1:
        raise next(iter(failed.values()))
    reasons = "; ".join(f"{rel}: {getattr(exc, 'problem', None) or exc}"
                        for rel, exc in failed.items())
    fixes = dict.fromkeys(getattr(exc, "fix", None) for exc in failed.values())
    fixes.pop(None, None)
    raise FetchFailed(f"{len(failed)} files failed ({reasons})", field="files",
                      value=sorted(failed),
                      fix="; ".join(fixes) or "run the same command again; finished files are "
                          "kept and partial ones resume")


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
