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

from .assemble import LoadedPipeline
from .errors import InvalidInput, LoraMismatch

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
    if not (STRENGTH_MIN <= strength <= STRENGTH_MAX):
        raise InvalidInput(f"strength must be between {STRENGTH_MIN} and {STRENGTH_MAX}",
                           field="strength", value=strength,
                           fix="use 1.0 for the LoRA's card setting, 0 to switch it off")


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
    """Load the file into the resident pipeline once; return its adapter name."""
    name = adapter_name(path)
    with loaded.lock:
        if name in loaded.loaded_loras:
            return name
        state_dict = dict(read_lora_file(path))
        before = _lora_layer_count(loaded.pipe.transformer)
        loaded.pipe.load_lora_weights(state_dict, adapter_name=name)
        if _lora_layer_count(loaded.pipe.transformer) == before:
            loaded.pipe.delete_adapters([name])
            raise LoraMismatch(
                "no key of this LoRA matches a layer of the Wan2.1 I2V transformer",
                field="lora", value=Path(path).name,
                fix="use a LoRA trained for Wan2.1 (14B); check its key names with "
                    "`python -c \"from safetensors import safe_open; "
                    "print(list(safe_open('FILE','pt').keys())[:5])\"`")
        loaded.loaded_loras[name] = str(path)
        log.info("loaded LoRA %s as adapter %s", Path(path).name, name)
        return name


def activate(loaded: LoadedPipeline, uses: tuple[LoraUse, ...]) -> None:
    """Set adapter weights for exactly ``uses``; every other loaded adapter gets weight 0."""
    with loaded.lock:
        weights: dict[str, float] = {n: 0.0 for n in loaded.loaded_loras}
        for use in uses:
            name = ensure_adapter(loaded, use.path)
            weights[name] = weights.get(name, 0.0) + use.strength
        if not weights:
            return
        loaded.pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))


def _lora_layer_count(module: torch.nn.Module) -> int:
    return sum(1 for name, _ in module.named_modules() if name.endswith("lora_A"))
