"""Re-hash everything a preload wrote and compare with the manifests (deep check, slow on purpose)."""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import manifest as mf

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    models_dir: Path
    files: int = 0
    bytes: int = 0
    bad: dict[str, str] = field(default_factory=dict)    # relpath -> what is wrong
    sets: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.sets) and not self.bad


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
    digest = mf.file_sha256(path, bar)
    if digest != entry.sha256:
        return f"SHA-256 {digest[:16]}..., expected {entry.sha256[:16]}... (content changed)"
    return None


def verify(models_dir: Path, names: list[str] | None = None, workers: int | None = None,
           show_progress: bool = True) -> VerifyReport:
    """Hash every file in the manifests (in parallel) and record the result per set."""
    started = time.monotonic()
    models_dir = Path(models_dir)
    manifests = [m for m in mf.list_manifests(models_dir) if names is None or m.name in names]
    entries = {e.relpath: e for m in manifests for e in m.entries.values()}
    report = VerifyReport(models_dir, len(entries), sum(e.size for e in entries.values()),
                          sets=[m.name for m in manifests])
    workers = workers or min(8, os.cpu_count() or 2)
    with tqdm(total=report.bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="verify",
              disable=not show_progress, mininterval=0.5) as bar, \
            ThreadPoolExecutor(workers) as pool:
        futures = {rel: pool.submit(_one, models_dir, e, bar) for rel, e in entries.items()}
        for rel, fut in futures.items():
            problem = fut.result()
            if problem:
                report.bad[rel] = problem
    report.seconds = time.monotonic() - started
    _record(models_dir, manifests, report)
    return report


def _record(models_dir: Path, manifests: list[mf.Manifest], report: VerifyReport) -> None:
    for m in manifests:
        bad = {rel: why for rel, why in report.bad.items() if rel in m.entries}
        data = {"ok": not bad, "at": time.time(), "bad": bad,
                "manifest_sha256": mf.manifest_digest(models_dir, m.name)}
        try:
            mf.write_json_atomic(mf.verify_path(models_dir, m.name), data)
        except OSError as exc:  # a read-only volume can still be verified
            log.info("could not record the verify result for %s (%s)", m.name, exc)
