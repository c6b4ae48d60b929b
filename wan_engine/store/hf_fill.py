"""``preload --hf-cache DIR``: fill a Hugging Face cache with huggingface_hub's own download.

``snapshot_download(cache_dir=DIR)`` writes exactly the layout ``from_pretrained``,
``hf download`` and RunPod's cached models use (``models--ORG--NAME/refs/main``,
``snapshots/<commit>/`` linking into ``blobs/<sha256>``); its resume, locks and hashing are
huggingface_hub's. The pack then finds the sets there (hf_cache.py) and hashes each file once
against its blob name at the first load (hf_verify.py), writing nothing into the cache.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import hf_cache, hub
from .profiles import Source

log = logging.getLogger(__name__)


@dataclass
class FillReport:
    cache_dir: Path
    snapshots: list[tuple[str, str, Path]] = field(default_factory=list)   # (repo, commit, folder)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{repo}@{commit[:12]} -> {folder}" for repo, commit, folder in self.snapshots]
        sets = [s.name for s in hf_cache.scan_cache(self.cache_dir) if s.complete]
        return "\n".join(lines + [f"complete sets in {self.cache_dir}: {', '.join(sets) or 'none'} "
                                  f"({self.seconds:.1f} s)"])


def fill(sources: tuple[Source, ...], cache_dir: Path, workers: int = 8,
         show_progress: bool = True) -> FillReport:
    """Each source's files (its ``include`` globs) at its revision, into ``cache_dir``."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    started = time.monotonic()
    report = FillReport(Path(cache_dir))
    if not show_progress:
        disable_progress_bars()
    try:
        for src in sources:
            _fill_one(src, Path(cache_dir), workers, report)
    finally:
        if not show_progress:
            enable_progress_bars()
    report.seconds = time.monotonic() - started
    return report


def _fill_one(src: Source, cache_dir: Path, workers: int, report: FillReport) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    try:
        folder = Path(snapshot_download(src.repo, revision=src.revision, cache_dir=str(cache_dir),
                                        allow_patterns=list(src.include), max_workers=workers,
                                        endpoint=hub.endpoint()))
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError,
            hf_errors.GatedRepoError) as exc:
        raise hub._explain(src, exc) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise hub.HubError(f"the download into {cache_dir} failed ({type(exc).__name__}: {exc})",
                           field="--repo", value=src.repo,
                           fix="run the same command again: huggingface_hub resumes what it fetched") from None
    report.snapshots.append((src.repo, folder.name, folder))
    log.info("%s@%s in %s", src.repo, folder.name[:12], folder)

