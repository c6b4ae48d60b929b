"""Optional background prefetch of a model set into the page cache when ComfyUI starts.

Network volumes are slow on the first read; reading the default set sequentially while ComfyUI
starts makes the first prompt find it warm. Off unless WAN_VOLUME_PREFETCH is set:
``default`` (or ``1``) picks the first complete set (720P before 480P), anything else names a set.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from . import fastload
from ..store import find as volume

log = logging.getLogger(__name__)

ENV_PREFETCH = "WAN_VOLUME_PREFETCH"


def choose_set(choice: str, extra_dirs=()) -> volume.ModelSet | None:
    sets = [s for s in volume.find_model_sets(extra_dirs) if s.complete]
    if choice.lower() in ("1", "default", "true", "yes"):
        sets.sort(key=lambda s: ("720" not in s.name, "tiny" in s.name, s.name))
        return sets[0] if sets else None
    return next((s for s in sets if s.name == choice), None)


def files_of(model_set: volume.ModelSet) -> list[Path]:
    """Every file of the set, largest first (the DiT is what the first prompt waits for)."""
    return sorted({f for f in model_set.files() if f.is_file()}, key=lambda f: f.stat().st_size, reverse=True)


def start(extra_dirs=()) -> threading.Thread | None:
    """Start the prefetch named by the environment; None when off or nothing matches."""
    choice = os.environ.get(ENV_PREFETCH, "").strip()
    if not choice or choice.lower() in ("0", "false", "no", "off"):
        return None
    chosen = choose_set(choice, extra_dirs)
    if chosen is None:
        log.warning("%s=%s: no complete model set of that name on the volume; nothing prefetched",
                    ENV_PREFETCH, choice)
        return None
    files = files_of(chosen)
    log.info("prefetching model set %s (%d files, %.1f GB) into the page cache", chosen.name,
             len(files), sum(f.stat().st_size for f in files) / 1e9)
    return fastload.prefetch(files)
