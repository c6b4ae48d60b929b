"""The run report: what one prompt's video cost in seconds, peak GPU memory and dollars.

A ``RunRecord`` is filled phase by phase while a prompt runs (model set made resident, LoRAs,
text and image encoding, sampling with the seconds of each step, decoding, writing the video)
and turned into a plain dict by ``finish``. Pricing: ``WAN_VOLUME_PRICE_PER_HOUR`` (USD per hour
for the whole machine) wins, else the shipped table (prices.py) times the GPU count, else null.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import torch

from . import prices
from .errors import InvalidInput

log = logging.getLogger(__name__)

ENV_PRICE = "WAN_VOLUME_PRICE_PER_HOUR"
# every phase a report lists, in the order a prompt runs them (sample/phases.py names the middle four)
PHASES: tuple[str, ...] = ("load", "lora", "text_encode", "image_encode", "sample", "sample_high",
                           "sample_low", "decode", "write")   # sample_high/low: Wan2.2's experts, within sample
PRICE_FIX = (f"set {ENV_PRICE} to the machine's price in US dollars per hour, a number such as 2.99 "
             "(0 for a machine you do not pay by the hour), or unset it to use the shipped table "
             "(wan_engine/prices.py)")


def price_setting(environ: Mapping[str, str] = os.environ) -> float | None:
    """The operator's price from ``WAN_VOLUME_PRICE_PER_HOUR``; None when unset or blank."""
    raw = environ.get(ENV_PRICE)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidInput("must be a finite number of US dollars per hour, 0 or more, for the whole "
                           "machine", field=ENV_PRICE, value=raw, fix=PRICE_FIX)
    return value


def device_info(device: torch.device | str | None) -> dict:
    """What the prompt ran on: type, name, and how many GPUs the machine shows this process."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(device),
                "gpu_count": torch.cuda.device_count()}
    return {"type": device.type, "name": platform.processor() or platform.machine() or device.type,
            "gpu_count": 0}


def machine_price(device: dict, environ: Mapping[str, str] = os.environ) -> tuple[float | None, str | None]:
    """(USD per hour for the whole machine, where that figure comes from)."""
    setting = price_setting(environ)
    if setting is not None:
        return setting, ENV_PRICE
    if device.get("type") != "cuda":
        return None, None            # no table price for CPUs: only the operator knows it
    per_gpu = prices.gpu_price_per_hour(device.get("name", ""))
    if per_gpu is None:
        return None, None
    count = max(1, int(device.get("gpu_count") or 1))   # a rented machine is billed for every GPU it shows
    return round(per_gpu * count, 6), f"{prices.SOURCE} x {count} GPU"


@dataclass
class PhaseTime:
    name: str
    seconds: float = 0.0
    peak_gpu_bytes: int | None = None
    step_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"name": self.name, "seconds": round(self.seconds, 6), "peak_gpu_bytes": self.peak_gpu_bytes}
        if self.name == "sample":
            out["step_seconds"] = [round(s, 6) for s in self.step_seconds]
        return out


class RunRecord:
    """The measurements of one prompt, from its first measured moment to the video written."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.start = time.perf_counter()
        self.phases: dict[str, PhaseTime] = {}
        self.settings: dict[str, object] = {}
        self.plan: dict | None = None
        self.device: torch.device | None = None
        self.loaded_from_volume: bool | None = None
        self.load_split: dict | None = None
        self._open: dict[str, float] = {}
        self._last_step: float | None = None

    def use_device(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def note_load(self, read_volume: bool, split: dict | None = None) -> None:
        """Whether making the set resident read the volume (True) or reused it (False), and for a
        read, how its seconds split (assemble.LoadedPipeline.load_split)."""
        self.loaded_from_volume = bool(self.loaded_from_volume) or read_volume
        if read_volume and split is not None:
            self.load_split = dict(split)

    def note_plan(self, loaded: object) -> None:
        """The memory plan the prompt ran with, when the loaded set carries one."""
        plan = getattr(loaded, "plan", None)
        self.plan = plan.to_dict() if plan is not None else None

    def begin(self, name: str) -> None:
        self._sync()
        if self._cuda():
            torch.cuda.reset_peak_memory_stats(self.device)
        now = time.perf_counter()
        self._open[name] = now
        if name == "sample":
            self._last_step = now

    def end(self, name: str) -> None:
        self._sync()   # GPU work is asynchronous: count it in the phase that queued it
        started = self._open.pop(name, None)
        if started is None:
            return
        entry = self.phases.setdefault(name, PhaseTime(name))
        entry.seconds += time.perf_counter() - started
        if self._cuda():
            peak = int(torch.cuda.max_memory_allocated(self.device))
            entry.peak_gpu_bytes = max(entry.peak_gpu_bytes or 0, peak)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time ``name`` (and read the GPU's peak memory in it); usable as a sample/phases.py hook."""
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def step_done(self) -> None:
        """One denoising step finished: its seconds go to the sample phase."""
        if self._last_step is None:
            return
        self._sync()
        now = time.perf_counter()
        self.phases.setdefault("sample", PhaseTime("sample")).step_seconds.append(now - self._last_step)
        self._last_step = now

    def finish(self, environ: Mapping[str, str] = os.environ) -> dict:
        """The report as a plain dict (JSON-ready); ``seconds`` runs up to now."""
        seconds = time.perf_counter() - self.start
        device = device_info(self.device)
        price, source = machine_price(device, environ)
        phases = [self.phases[n].as_dict() for n in PHASES if n in self.phases]
        for p in phases:
            if p["name"] == "load" and self.load_split is not None:
                p["split"] = self.load_split
        peaks = [p["peak_gpu_bytes"] for p in phases if p["peak_gpu_bytes"] is not None]
        return {
            "version": 1,
            "prompt_id": self.key,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 6),
            "phases": phases,
            "peak_gpu_bytes": max(peaks) if peaks else None,
            "loaded_from_volume": self.loaded_from_volume,
            "plan": self.plan,
            "device": device,
            "settings": self.settings,
            "price_per_hour": price,
            "price_source": source,
            "cost_usd": None if price is None else round(seconds, 6) * price / 3600.0,
        }

    def _cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda" and torch.cuda.is_available()

    def _sync(self) -> None:
        if self._cuda():
            torch.cuda.synchronize(self.device)


def summary(report: dict) -> str:
    """The one log line per prompt: seconds per phase, peak GPU memory, cost in cents."""
    parts = ", ".join(f"{p['name']} {p['seconds']:.2f}" for p in report["phases"])
    peak = report.get("peak_gpu_bytes")
    memory = "n/a (no GPU)" if peak is None else f"{peak / 2**30:.2f} GiB"
    cost = report.get("cost_usd")
    money = ("no price (set " + ENV_PRICE + ")" if cost is None else
             f"{cost * 100:.3f} cents at ${report['price_per_hour']:g}/h ({report['price_source']})")
    return f"run report: {report['seconds']:.2f} s ({parts}), peak GPU {memory}, cost {money}"


def report_path(video: Path) -> Path:
    """The report beside its video: same name, ``.json``."""
    return Path(video).with_suffix(".json")


def write_json(report: dict, path: Path) -> Path:
    """Write ``report`` atomically: a hidden part file, renamed when complete (as the video is)."""
    path = Path(path)
    part = path.with_name(f".{path.stem}.part.json")
    try:
        part.write_text(json.dumps(report, indent=2, sort_keys=False), encoding="utf-8")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path
