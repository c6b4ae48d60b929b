"""Adopt an hf download ``--local-dir`` folder into our manifest, without downloading.

Each file that hf download recorded is hashed once and compared with the Hub's etag in its
record (hf_local.py); a match becomes a manifest entry (size, SHA-256, commit, mtime), so later
loads, ``check`` and ``status`` trust it without reading it again. The manifest is named after
the profile that fetches the same folder (``Wan2.1-I2V-14B-720P`` -> ``wan21-i2v-720p``,
``kissing-lora``), else after the folder.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import hashing, hf_local, profiles
from . import manifest as mf

log = logging.getLogger(__name__)


@dataclass
class AdoptReport:
    folder: Path
    name: str
    adopted: list[str] = field(default_factory=list)     # relpaths hashed and recorded now
    kept: list[str] = field(default_factory=list)        # already recorded, unchanged
    bad: dict[str, str] = field(default_factory=dict)    # relpath -> mismatch
    unfinished: list[str] = field(default_factory=list)  # hf download's *.incomplete parts
    bytes: int = 0
    seconds: float = 0.0
    not_recorded: str = ""   # why the results could not be written (a read-only volume)

    @property
    def ok(self) -> bool:
        return bool(self.adopted or self.kept) and not self.bad and not self.unfinished


def manifest_name(folder: Path) -> tuple[str, str]:
    """(manifest name, repo) for a local dir: the profile that fills this folder, if any."""
    for p in profiles.PROFILES.values():
        if len(p.sources) == 1 and p.sources[0].mapping == (("", folder.name),):
            return p.name, p.sources[0].repo
    return folder.name, ""


def _same(entry: mf.ManifestEntry, record: hf_local.HubRecord) -> bool:
    """The manifest entry was made from this record (same published file)."""
    if record.kind == "sha256":
        return entry.sha256 == record.etag
    return entry.revision == record.commit and entry.origin == mf.ORIGIN_HF_LOCAL


def entry_for(models_dir: Path, record: hf_local.HubRecord, hasher: hashing.Hasher,
              repo: str) -> mf.ManifestEntry:
    return mf.ManifestEntry(record.path.absolute().relative_to(models_dir).as_posix(),
                            hasher.size, hasher.sha256.hexdigest(), repo, record.commit,
                            record.filename, mtime_ns=mf.mtime_ns(record.path),
                            origin=mf.ORIGIN_HF_LOCAL)


def remember(record: hf_local.HubRecord, hasher: hashing.Hasher) -> None:
    """Record one verified file (the .pth check at load); a read-only volume only logs."""
    folder = record.local_dir.absolute()
    name, repo = manifest_name(folder)
    try:
        mf.record_entries(folder.parent, name, [entry_for(folder.parent, record, hasher, repo)],
                          [mf.SourcePin(repo, record.commit, record.commit)] if repo else None)
    except OSError as exc:
        log.info("could not record the hash of %s in %s (%s); it is hashed again next start",
                 record.path, mf.state_dir(folder.parent), exc)


def adopt(folder: Path, on_bytes: Callable[[int], None] | None = None) -> AdoptReport:
    """Hash every recorded file of ``folder`` against its record; record the ones that match."""
    started = time.monotonic()
    folder = Path(folder).absolute()
    models_dir = folder.parent
    name, repo = manifest_name(folder)
    report = AdoptReport(folder, name)
    report.unfinished = [p.name for p in hf_local.unfinished(folder)]
    known = (mf.load_manifest(models_dir, name) or mf.Manifest(name)).entries
    entries, commits = [], set()
    for record in hf_local.records_in(folder):
        rel = record.path.relative_to(models_dir).as_posix()
        entry = known.get(rel)
        if entry is not None and entry.vouches_for(record.path) and _same(entry, record):
            report.kept.append(rel)
            continue
        hasher = hashing.hash_file(record.path, on_bytes, git=record.kind == "git-sha1")
        report.bytes += hasher.size
        if not record.matches(hasher):
            report.bad[rel] = record.mismatch(hasher)
            continue
        entries.append(entry_for(models_dir, record, hasher, repo))
        commits.add(record.commit)
        report.adopted.append(rel)
    pins = [mf.SourcePin(repo, c, c) for c in sorted(commits)] if repo else None
    try:
        mf.record_entries(models_dir, name, entries, pins)
    except OSError as exc:   # a read-only volume: the hashes were checked, only not remembered
        report.not_recorded = f"{exc.strerror or exc} ({exc.filename or mf.state_dir(models_dir)})"
    report.seconds = time.monotonic() - started
    return report
