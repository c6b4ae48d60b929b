"""Start-up work on the volume: an optional page-cache prefetch, and the warm-up's state.

Prefetch (WAN_VOLUME_PREFETCH): network volumes are slow on the first read; reading the default
set sequentially while ComfyUI starts makes the first prompt find it in the page cache.
``default`` (or ``1``) picks the first complete set (720P before 480P), anything else names a set.

Warm-up (WAN_VOLUME_WARMUP=<set|default>[,<lora>...]): the nodes' layer (nodes/warmup.py) loads
the set as the loader node would, onto the GPU where the plan keeps it there, and the LoRAs
named; ``Warming`` is its state, shown by GET /wan_volume/status as ``warming``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import fastload
from ..errors import WanVolumeError
from ..store import find as volume

log = logging.getLogger(__name__)

ENV_PREFETCH = "WAN_VOLUME_PREFETCH"
ENV_WARMUP = "WAN_VOLUME_WARMUP"
ENV_REHEARSAL = "WAN_VOLUME_WARMUP_RUN"
OFF = ("", "0", "false", "no", "off")
PHASES = ("waiting", "reading", "to-device", "loras", "rehearsal", "ready", "failed")


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
    if choice.lower() in OFF:
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


# ---- the warm-up's state -----------------------------------------------------------------

def parse_rehearsal(value: str | None) -> tuple[int, int, int] | None:
    """``WAN_VOLUME_WARMUP_RUN=WxHxF``: after loading, the warm-up runs one step of a video of
    that size (the size the worker's prompts use), so the first prompt finds the kernels chosen,
    the caches built and the lazy first-call work done. None when off."""
    text = (value or "").strip().lower()
    if text in OFF:
        return None
    parts = text.split("x")
    size = tuple(int(p) for p in parts) if len(parts) == 3 and all(p.isdigit() for p in parts) else None
    if size is None or not (size[0] > 0 and size[1] > 0 and size[0] % 16 == size[1] % 16 == 0
                            and size[2] % 4 == 1):
        raise WanVolumeError("not a video size", field=ENV_REHEARSAL, value=value,
                             fix="give WIDTHxHEIGHTxFRAMES as the workflow's sampler has them "
                                 "(multiples of 16; frames 4k+1), e.g. 832x480x81, or leave it unset")
    return size


def parse_warmup(value: str | None) -> tuple[str, tuple[str, ...]] | None:
    """``<set|default>[,<lora>...]`` -> (set choice, LoRA names); None when off."""
    parts = [p.strip() for p in (value or "").split(",")]
    if not parts or parts[0].lower() in OFF:
        return None
    return parts[0], tuple(p for p in parts[1:] if p)


@dataclass
class Warming:
    """One warm-up: which set, which phase, how many of its bytes are read."""

    set: str
    loras: tuple[str, ...] = ()
    phase: str = "waiting"
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def on_bytes(self, done: int, total: int) -> None:
        """The loader's byte progress (reads and the hash checks of a first load)."""
        self.bytes_done, self.bytes_total = done, total

    def enter(self, phase: str) -> None:
        log.info("WanVolume warm-up of %s: %s", self.set, phase)
        self.phase = phase

    def finish(self, error: str | None = None) -> None:
        self.error = error
        self.phase = "failed" if error else "ready"
        self.finished = time.monotonic()
        self.done.set()
        log.log(logging.WARNING if error else logging.INFO, "WanVolume warm-up of %s %s after %.1f s%s",
                self.set, self.phase, self.finished - self.started, f": {error}" if error else "")

    @property
    def progress(self) -> float:
        """0..1: the bytes read while reading, 1 once on the device."""
        if self.phase in ("ready", "to-device", "loras", "rehearsal"):
            return 1.0
        return min(1.0, self.bytes_done / self.bytes_total) if self.bytes_total else 0.0

    def as_dict(self) -> dict:
        end = self.finished if self.finished is not None else time.monotonic()
        return {"set": self.set, "loras": list(self.loras), "phase": self.phase,
                "progress": round(self.progress, 4), "bytes_done": self.bytes_done,
                "bytes_total": self.bytes_total, "seconds": round(end - self.started, 2),
                "active": self.phase not in ("ready", "failed"), "error": self.error}


_current: Warming | None = None


def begin(choice: str, loras: tuple[str, ...] = ()) -> Warming:
    global _current
    _current = Warming(choice, loras)
    return _current


def current() -> Warming | None:
    return _current


def warming() -> dict | None:
    """The status route's ``warming``: None when no warm-up was asked for."""
    return _current.as_dict() if _current is not None else None


def wait(timeout: float | None = None) -> bool:
    """Block until a running warm-up ends (True at once when none runs)."""
    return _current is None or _current.done.wait(timeout)
