"""Re-hash everything a preload wrote and compare with the manifests (deep check, slow on purpose).

Files that match get their size and mtime recorded, so the loader and ``check`` trust them
without reading them again. hf download folders not yet adopted are hashed against the Hub's
records (adopt.py); model sets filled by hand have no published hash, and are listed with what
the header check found (``unhashed``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import adopt, hashing, hf_local, integrity
from . import manifest as mf
from .check import broken_sets, unmanaged_sets
from ..errors import WanVolumeError

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    models_dir: Path
    files: int = 0
    bytes: int = 0
    bad: dict[str, str] = field(default_factory=dict)    # relpath -> what is wrong
    sets: list[str] = field(default_factory=list)
    unhashed: list = field(default_factory=list)         # check.SetCheck of sets with no hash
    broken: list = field(default_factory=list)           # check.SetCheck of unreadable manifests
    not_recorded: str = ""    # why results could not be written (said once; read-only volume)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.sets) and not self.bad and not self.broken


def check_workers(workers: int | None) -> int:
    if workers is None:
        return min(8, os.cpu_count() or 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WanVolumeError("need at least one hashing worker", field="--workers", value=workers,
                             fix="pass --workers 1 or more, or leave it out (default: CPUs, max 8)")
    return workers


def _one(models_dir: Path, entry: mf.ManifestEntry, bar: tqdm) -> str | None:
    path = models_dir / entry.relpath
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        bar.update(entry.size)
        return "missing"
    if size != entry.size:
        bar.update(entry.size)
        return f"size {size} bytes, expected {entry.size}"
    stamp = mf.mtime_ns(path)
    digest = hashing.file_sha256(path, bar.update)
    if digest != entry.sha256:
        return f"SHA-256 {digest}, expected {entry.sha256} (content changed)"
    entry.mtime_ns = stamp   # recorded below: the loader need not hash it again
    return None


def verify(models_dir: Path, names: list[str] | None = None, workers: int | None = None,
           show_progress: bool = True) -> VerifyReport:
    """Hash every file in the manifests (in parallel) and record the result per set."""
    started = time.monotonic()
    models_dir = Path(models_dir)
    workers = check_workers(workers)
    adopted = _adopt_local_dirs(models_dir, show_progress) if names is None else []
    fresh = {rel for a in adopted for rel in a.adopted}
    not_recorded = [a.not_recorded for a in adopted if a.not_recorded]
    manifests = [m for m in mf.list_manifests(models_dir) if names is None or m.name in names]
    entries = {e.relpath: e for m in manifests for e in m.entries.values()}
    report = VerifyReport(models_dir, len(entries), sum(e.size for e in entries.values()),
                          sets=[m.name for m in manifests])
    with tqdm(total=report.bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="verify",
              disable=not show_progress, mininterval=0.5) as bar, \
            ThreadPoolExecutor(workers) as pool:
        futures = {rel: pool.submit(_one, models_dir, e, bar) for rel, e in entries.items()
                   if rel not in fresh}   # adopted just now: hashed a moment ago
        bar.update(sum(entries[rel].size for rel in fresh if rel in entries))
        for rel, fut in futures.items():
            problem = fut.result()
            if problem:
                report.bad[rel] = problem
    for a in adopted:
        report.bad.update(a.bad)
    report.seconds = time.monotonic() - started
    if names is None:
        _count_unrecorded(report, [a for a in adopted if a.not_recorded])
        report.broken = broken_sets(models_dir)
    _save_mtimes(models_dir, manifests, report, not_recorded)
    _record(models_dir, manifests, report, not_recorded)
    report.not_recorded = not_recorded[0] if not_recorded else ""
    return report


def _count_unrecorded(report: VerifyReport, adopted: list[adopt.AdoptReport]) -> None:
    """Sets hashed against the Hub's records that a read-only volume could not record: counted as
    verified here (the hashes matched), and not listed again as unhashed."""
    folders = {a.folder.name for a in adopted}
    report.unhashed = [s for s in unmanaged_sets(report.models_dir, integrity.index(report.models_dir))
                       if s.name.split(" (")[0] not in folders]
    for a in adopted:
        report.sets.append(a.name)
        report.files += len(a.adopted)
        report.bytes += a.bytes


def _adopt_local_dirs(models_dir: Path, show_progress: bool) -> list[adopt.AdoptReport]:
    """hf download folders whose files are not all in a manifest yet: hash them once."""
    out: list[adopt.AdoptReport] = []
    if not models_dir.is_dir():
        return out
    known = integrity.index(models_dir)
    for folder in sorted(p for p in models_dir.iterdir() if hf_local.is_local_dir(p)):
        records = hf_local.records_in(folder)
        if all(r.path.absolute() in known for r in records):
            continue
        total = sum(r.path.stat().st_size for r in records)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"adopt {folder.name}", disable=not show_progress, mininterval=0.5) as bar:
            out.append(adopt.adopt(folder, bar.update))
    return out


def _save_mtimes(models_dir: Path, manifests: list[mf.Manifest], report: VerifyReport,
                 not_recorded: list[str]) -> None:
    for m in manifests:
        good = [e for e in m.entries.values() if e.relpath not in report.bad and e.mtime_ns]
        try:
            mf.record_entries(models_dir, m.name, good)
        except OSError as exc:  # a read-only volume can still be verified
            not_recorded.append(f"{exc.strerror or exc} ({exc.filename or models_dir})")


def _record(models_dir: Path, manifests: list[mf.Manifest], report: VerifyReport,
            not_recorded: list[str]) -> None:
    for m in manifests:
        bad = {rel: why for rel, why in report.bad.items() if rel in m.entries}
        data = {"ok": not bad, "at": time.time(), "bad": bad,
                "manifest_sha256": mf.manifest_digest(models_dir, m.name)}
        try:
            mf.write_json_atomic(mf.verify_path(models_dir, m.name), data)
        except OSError as exc:  # a read-only volume can still be verified
            not_recorded.append(f"{exc.strerror or exc} ({exc.filename or models_dir})")
