"""Load a model set into a ``WanImageToVideoPipeline`` and keep it resident.

Loading reads the volume once; later prompts reuse the resident pipeline. One set is resident at
a time: loading another set (or the same set in another precision/offload) releases the first.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import InvalidInput
from .volume import ModelSet

log = logging.getLogger(__name__)

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
OFFLOAD_MODES = ("none", "model", "sequential")
OFFLOAD_HELP = {
    "none": "keep every component on the GPU (fastest; ~40 GB+ VRAM for 14B in bf16)",
    "model": "move whole components to the GPU only while they run (diffusers model CPU offload)",
    "sequential": "stream layer by layer from CPU (lowest VRAM, slowest)",
}

# layout -> function(model_set, dtype) -> pipeline; other layouts register in layouts/.
BUILDERS: dict[str, Callable[[ModelSet, torch.dtype], object]] = {}


@dataclass
class LoadedPipeline:
    """The resident pipeline and what is known about it."""

    key: tuple
    model_set: ModelSet
    pipe: object
    dtype: torch.dtype
    device: torch.device
    offload: str
    load_seconds: float
    loaded_loras: dict[str, str] = field(default_factory=dict)   # adapter name -> file path
    lora_reports: dict[str, object] = field(default_factory=dict)  # adapter name -> LoraReport
    lock: threading.RLock = field(default_factory=threading.RLock)


_resident: LoadedPipeline | None = None
_resident_lock = threading.Lock()
load_count = 0   # how many times a set was read from the volume in this process (for tests/status)


def execution_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def check_load_args(precision: str, offload: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise InvalidInput("unknown precision", field="precision", value=precision,
                           fix=f"use one of {', '.join(PRECISIONS)}")
    if offload not in OFFLOAD_MODES:
        raise InvalidInput("unknown offload mode", field="offload", value=offload,
                           fix=f"use one of {', '.join(OFFLOAD_MODES)}")
    return PRECISIONS[precision]


def load(model_set: ModelSet, precision: str = "bf16", offload: str = "none") -> LoadedPipeline:
    """The resident pipeline for ``model_set``, loading it only if it is not resident yet."""
    global _resident, load_count
    dtype = check_load_args(precision, offload)
    key = (str(model_set.root), model_set.name, precision, offload)
    with _resident_lock:
        if _resident is not None and _resident.key == key:
            return _resident
        release()
        start = time.perf_counter()
        builder = BUILDERS.get(model_set.layout, build_diffusers)
        pipe = builder(model_set, dtype)
        device = execution_device()
        _place(pipe, device, offload)
        load_count += 1
        _resident = LoadedPipeline(key=key, model_set=model_set, pipe=pipe, dtype=dtype,
                                   device=device, offload=offload,
                                   load_seconds=time.perf_counter() - start)
        log.info("loaded model set %s (%s, %s, offload=%s) in %.1f s", model_set.name,
                 model_set.layout, precision, offload, _resident.load_seconds)
        return _resident


def release() -> None:
    """Drop the resident pipeline and free its memory."""
    global _resident
    if _resident is None:
        return
    log.info("releasing model set %s", _resident.model_set.name)
    _resident = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resident() -> LoadedPipeline | None:
    return _resident


def build_diffusers(model_set: ModelSet, dtype: torch.dtype):
    """Diffusers layout: the DiT in ``dtype``; VAE and image encoder in fp32 as Wan expects
    (they are small and lose quality in half precision); the text encoder in ``dtype``."""
    from diffusers import WanImageToVideoPipeline

    dtypes = {"transformer": dtype, "text_encoder": dtype, "default": torch.float32}
    return WanImageToVideoPipeline.from_pretrained(str(model_set.root), dtype=dtypes,
                                                   local_files_only=True)


def _place(pipe, device: torch.device, offload: str) -> None:
    if device.type == "cpu":
        if offload != "none":
            log.warning("offload=%s needs a GPU; running on the CPU without offload", offload)
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
