"""Apply LoRAs to the resident pipeline as named adapters.

A LoRA file is read once per (path, size, mtime) and loaded once into the resident pipeline as a
peft adapter. Strength is the adapter weight: changing it calls ``set_adapters`` and reloads
nothing. Weight 0 gives the base model's output exactly.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from . import rules
from .assemble import LoadedPipeline
from .errors import LoraMismatch
from .lora_formats import LoraReport, normalise

log = logging.getLogger(__name__)

STRENGTH_MIN, STRENGTH_MAX = -2.0, 2.0

_file_cache: dict[tuple, dict[str, torch.Tensor]] = {}
read_count = 0   # LoRA files read from disk in this process (for tests)


@dataclass(frozen=True)
class LoraUse:
    """One LoRA in a chain: the file and its strength."""

    path: str
    strength: float


def check_strength(strength: float) -> None:
    rules.number("strength", strength, lo=STRENGTH_MIN, hi=STRENGTH_MAX, example=1.0,
                 context=" (1.0 is the LoRA card's setting, 0 switches it off)")


def adapter_name(path: str | Path) -> str:
    """A peft-safe adapter name that is stable for one file path."""
    p = Path(path)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", p.stem)[:40]
    return f"{stem}_{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors, read once while its size and mtime stay the same."""
    from safetensors.torch import load_file

    global read_count
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _file_cache:
        _file_cache.clear()   # keep one file's tensors; adapters hold their own copy
        _file_cache[key] = load_file(str(p), device="cpu")
        read_count += 1
    return _file_cache[key]


def ensure_adapter(loaded: LoadedPipeline, path: str | Path) -> str:
    """Load the file into the resident pipeline once; return its adapter name.

    Any common Wan LoRA format is normalised first (lora_formats.py); the match report is kept
    in ``loaded.lora_reports[name]`` (see ``report_for``). No match at all is an error naming
    what the file looks like it was made for; a partial match is a warning with counts.
    """
    name = adapter_name(path)
    with loaded.lock:
        if name in loaded.loaded_loras:
            return name
        converted, report = normalise(read_lora_file(path), loaded.pipe.transformer, str(path))
        if report.matched == 0:
            raise _no_match(path, report)
        before = _lora_layer_count(loaded.pipe.transformer)
        loaded.pipe.load_lora_weights(converted, adapter_name=name)
        applied = _lora_layer_count(loaded.pipe.transformer) - before
        if applied != report.matched:
            log.warning("LoRA %s: expected %d adapted layers, peft created %d", Path(path).name,
                        report.matched, applied)
        if report.status == "partial":
            log.warning("LoRA %s matches the model only partly: %s", Path(path).name, report.summary())
        loaded.loaded_loras[name] = str(path)
        loaded.lora_reports[name] = report
        log.info("loaded LoRA %s as adapter %s: %s", Path(path).name, name, report.summary())
        return name


def report_for(loaded: LoadedPipeline, path: str | Path) -> LoraReport | None:
    """The match report of a LoRA loaded into ``loaded`` (None if not loaded yet)."""
    return loaded.lora_reports.get(adapter_name(path))


def _no_match(path: str | Path, report: LoraReport) -> LoraMismatch:
    examples = "; ".join(report.unmatched_examples[:3]) or "no LoRA weights found"
    return LoraMismatch(
        f"no key of this LoRA matches a layer of the Wan2.1 I2V 14B transformer; it looks made for "
        f"{report.looks_like} (format {report.format}; e.g. {examples})",
        field="lora", value=Path(path).name,
        fix="use a LoRA trained for Wan2.1 I2V/T2V 14B; check its key names with "
            "`python -c \"from safetensors import safe_open; "
            "print(list(safe_open('FILE','pt').keys())[:5])\"`")


def activate(loaded: LoadedPipeline, uses: tuple[LoraUse, ...], fuse: bool = False) -> None:
    """Set adapter weights for exactly ``uses``; every other loaded adapter gets weight 0.

    ``fuse=True`` merges the weighted adapters into the base weights (faster steps, same output
    within float rounding); it is undone before strengths change, so nothing is reloaded.
    """
    with loaded.lock:
        weights: dict[str, float] = {n: 0.0 for n in loaded.loaded_loras}
        for use in uses:
            name = ensure_adapter(loaded, use.path)
            weights[name] = weights.get(name, 0.0) + use.strength
        state = (tuple(sorted(weights.items())), fuse)
        if getattr(loaded.pipe, "_wanvolume_lora_state", None) == state:
            return
        if getattr(loaded.pipe, "_wanvolume_fused", False):
            loaded.pipe.unfuse_lora(components=["transformer"])
            loaded.pipe._wanvolume_fused = False
        if not weights:
            return
        loaded.pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
        active = [n for n, w in weights.items() if w != 0.0]
        if fuse and active:
            loaded.pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=active)
            loaded.pipe._wanvolume_fused = True
        loaded.pipe._wanvolume_lora_state = state


def _lora_layer_count(module: torch.nn.Module) -> int:
    return sum(1 for name, _ in module.named_modules() if name.endswith("lora_A"))
