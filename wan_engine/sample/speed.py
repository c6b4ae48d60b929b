"""diffusers' own speed features as plain options: attention backend, regional compile, step
cache, and fp8 matmuls for a DiT under fp8 storage.

Each option is applied to the resident DiT only when it changes. Options that need a GPU or a
package that is not installed raise an error naming the fix. ``SpeedSettings()`` (what an
unconnected ``speed`` input means) is the pipeline's reference path: native SDPA attention, no
compile, no cache, no fp8 matmul. ``attention="auto"`` is an explicit choice: it picks the
fastest installed backend for the device and logs which.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import rules
from ..errors import InvalidInput, WanVolumeError
from ..load import fp8

log = logging.getLogger(__name__)

# backend -> (Python module it needs or None, pip package, needs CUDA)
ATTENTION_BACKENDS = {
    "native": (None, "", False),
    "_native_cudnn": (None, "", True),
    "_native_flash": (None, "", True),
    "_native_efficient": (None, "", True),
    "flash": ("flash_attn", "flash-attn", True),
    "_flash_3": ("flash_attn_interface", "flash-attn 3 (built from source, Hopper GPUs)", True),
    "sage": ("sageattention", "sageattention", True),
    "xformers": ("xformers", "xformers", True),
}
ATTENTION_CHOICES = ("auto",) + tuple(ATTENTION_BACKENDS)
WAN_TAYLORSEER_MODULES = r"blocks\.\d+\.(attn1|attn2|ffn)"
AUTO_ORDER = ("sage", "_flash_3", "flash", "_native_cudnn", "native")   # fastest first
CACHES = ("none", "first_block", "mag", "mag_calibrate", "taylorseer")
CACHE_HELP = {
    "none": "every step runs the whole DiT",
    "first_block": "FirstBlockCache: skip the rest of the DiT when the first block barely changes",
    "mag": "MagCache with this model set's ratios (run once with mag_calibrate first)",
    "mag_calibrate": "run MagCache's calibration (nothing skipped) and store the ratios for `mag`",
    "taylorseer": "TaylorSeer: predict skipped steps from earlier ones by a Taylor expansion",
}


@dataclass(frozen=True)
class SpeedSettings:
    """Speed options for a run; the defaults are diffusers' reference path (native attention,
    no compile, no cache), whatever packages are installed."""

    attention: str = "native"
    compile: bool = False
    cache: str = "none"
    cache_threshold: float = 0.05   # FirstBlockCache / MagCache: higher skips more
    fp8_matmul: bool = False        # fp8 storage's Linear layers as fp8 matmuls (lossy, opt-in)


def installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def check_names(attention: str, cache: str) -> None:
    """Raise ``InvalidInput`` for a name outside the choices (device checks come at sample time)."""
    rules.choice("attention", attention, ATTENTION_CHOICES)
    rules.choice("cache", cache, CACHES)


def resolve_attention(name: str, device: torch.device) -> str:
    """The backend to use for ``name`` on ``device``; raises naming the fix if it cannot run."""
    rules.choice("attention", name, ATTENTION_CHOICES)
    if name == "auto":
        if device.type != "cuda":
            return "native"
        return next(b for b in AUTO_ORDER if installed(ATTENTION_BACKENDS[b][0]) and _capable(b, device))
    module, package, needs_cuda = ATTENTION_BACKENDS[name]
    if needs_cuda and device.type != "cuda":
        raise InvalidInput(f"needs a CUDA GPU; this run is on {device.type}", field="attention",
                           value=name, fix="use attention auto or native")
    if not installed(module):
        raise InvalidInput(f"needs the Python package {package}, which is not installed",
                           field="attention", value=name,
                           fix=f"pip install {package} in ComfyUI's Python, or use attention auto")
    return name


def _capable(backend: str, device: torch.device) -> bool:
    """Kernels auto may pick: flash 3 needs Hopper (sm90); the others Ampere (sm80) or newer."""
    if backend == "native":
        return True
    major, minor = torch.cuda.get_device_capability(device)
    return (major, minor) == (9, 0) if backend == "_flash_3" else major >= 8


def apply_attention(transformer, name: str, device: torch.device) -> str:
    backend = resolve_attention(name, device)
    current = getattr(transformer, "_wanvolume_attention", "native")
    if backend != current:
        transformer.set_attention_backend(backend)
        transformer._wanvolume_attention = backend
    if name == "auto":
        log.info("attention auto -> %s on %s", backend, device.type)
    return backend


def check_compile(device: torch.device) -> None:
    """torch.compile needs Triton on a GPU and a C++ compiler on the CPU."""
    if device.type == "cuda" and not installed("triton"):
        raise WanVolumeError("compile needs Triton for CUDA, which is not installed", field="compile",
                             value=True, fix="pip install triton, or switch compile off")
    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        raise WanVolumeError("compile on the CPU needs a C++ compiler (none on PATH)", field="compile",
                             value=True, fix="install g++ (apt-get install g++), or switch compile off")


def apply_compile(transformer, on: bool, device: torch.device) -> None:
    """Regional compile of the repeated Wan blocks, once; off restores eager blocks."""
    if on == getattr(transformer, "_wanvolume_compiled", False):
        return
    if on:
        check_compile(device)
        transformer.compile_repeated_blocks(fullgraph=True)
    else:
        for block in transformer.blocks:
            block._compiled_call_impl = None
    transformer._wanvolume_compiled = on
    log.info("regional compile of the DiT blocks %s", "on" if on else "off")


def cache_config(name: str, steps: int, threshold: float, ratios_file: Path | None):
    """The diffusers cache config for ``name`` (None for "none")."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    rules.choice("cache", name, CACHES)
    if name == "none":
        return None
    if name == "first_block":
        return FirstBlockCacheConfig(threshold=threshold)
    if name == "taylorseer":   # diffusers' default patterns miss Wan's attn1/attn2: name them
        return TaylorSeerCacheConfig(cache_identifiers=[WAN_TAYLORSEER_MODULES])
    if name == "mag_calibrate":
        return MagCacheConfig(calibrate=True, num_inference_steps=steps)
    ratios = load_mag_ratios(ratios_file)
    return MagCacheConfig(mag_ratios=ratios, num_inference_steps=steps, threshold=threshold)


def check_combination(options: SpeedSettings, fp8_storage: bool) -> None:
    """Refuse option pairs that cannot run together, naming both.

    Regional compile uses ``fullgraph=True``: the step caches' hooks are excluded from
    compilation (``torch.compiler.disable``) and fp8 storage swaps ``weight.data`` inside every
    compiled layer, so either one inside a compiled block fails or recompiles every call."""
    if options.compile and options.cache != "none":
        raise InvalidInput(f"compile cannot be combined with cache {options.cache} (the cache's "
                           "hooks break the compiled blocks' full graph)", field="cache",
                           value=options.cache, fix="use cache none with compile, or switch compile off",
                           suggested=("none",))
    if options.fp8_matmul and not fp8_storage:
        raise InvalidInput("fp8_matmul needs the DiT's weights in fp8: the loader's fp8_storage is off",
                           field="fp8_matmul", value=True,
                           fix="switch fp8_storage on in the loader, or fp8_matmul off", suggested=(False,))
    if options.compile and fp8_storage:
        raise InvalidInput("compile cannot be combined with the loader's fp8_storage (its per-layer "
                           "upcast changes the weights inside the compiled blocks)", field="compile",
                           value=True, fix="switch compile off, or fp8_storage off in the loader",
                           suggested=(False,))


def apply_fp8_matmul(transformer, on: bool, device: torch.device) -> int:
    """fp8 matmuls for the fp8-stored Linear layers (on) or their per-layer upcast (off);
    switched only when it changes. A device without fp8 matmuls is refused, naming it."""
    if on:
        reason = fp8.matmul_capable(device)
        if reason:
            raise InvalidInput(reason, field="fp8_matmul", value=True,
                               fix="switch fp8_matmul off (fp8_storage alone still halves the DiT's memory)",
                               suggested=(False,))
    current = getattr(transformer, "_wanvolume_fp8_matmul", None)
    if current is not None and current[0] == on:
        return current[1]
    layers = fp8.set_fp8_matmul(transformer, on)
    transformer._wanvolume_fp8_matmul = (on, layers)
    if on:
        log.info("fp8 matmul: %d Linear layers on %s (activations quantised per tensor)", layers, device.type)
    return layers


def apply_cache(transformer, name: str, steps: int, threshold: float, ratios_file: Path | None) -> None:
    """The step cache for this run, with fresh state; "none" removes any.

    The hooks are registered once per configuration: a later run with the same cache only
    resets the cache's state, so nothing is registered again (and nothing recompiled)."""
    config = cache_config(name, steps, threshold, ratios_file)
    ratios = Path(ratios_file).read_text() if name == "mag" else None   # cache_config read it
    key = None if config is None else (name, steps, threshold, ratios)
    if key is not None and key == getattr(transformer, "_wanvolume_cache", None) \
            and transformer.is_cache_enabled:
        transformer._reset_stateful_cache()
        return
    if transformer.is_cache_enabled:
        transformer.disable_cache()
    transformer._wanvolume_cache = key
    if config is not None:
        transformer.enable_cache(config)
        transformer._reset_stateful_cache()


def load_mag_ratios(path: Path | None) -> list[float]:
    if path is None or not Path(path).is_file():
        raise WanVolumeError("MagCache has no ratios for this model set yet", field="cache", value="mag",
                             fix="run one prompt with cache mag_calibrate (same sampler and steps), "
                                 f"which stores them{f' in {path}' if path else ''}; then use mag")
    return json.loads(Path(path).read_text())["ratios"]


def save_mag_ratios(path: Path, ratios: list[float], steps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"steps": steps, "ratios": ratios}, indent=1))
    tmp.replace(path)
    log.info("stored %d MagCache ratios in %s", len(ratios), path)


class MagCalibration(logging.Handler):
    """Collects the ratios diffusers' MagCache logs at the end of a calibration run."""

    PREFIX = "MagCache Calibration Results: "

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.runs: list[list[float]] = []
        self._logger = logging.getLogger("diffusers.hooks.mag_cache")
        self._level = self._logger.level

    def __enter__(self) -> "MagCalibration":
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith(self.PREFIX):
            self.runs.append(json.loads(msg[len(self.PREFIX):]))

    def ratios(self) -> list[float]:
        """The mean over the cond/uncond contexts, step by step."""
        return [sum(r[i] for r in self.runs) / len(self.runs) for i in range(len(self.runs[0]))]
