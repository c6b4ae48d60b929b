"""fp8 weights: ComfyUI's scaled fp8 files, and optional fp8 storage with per-layer upcast.

fp8 storage applies to any source dtype (bf16/fp16/fp32/fp8 files) and any compute precision;
the loader reads the stored tensors straight into fp8 (``storage_policy``), so loading peaks
below a bf16 load.

Scaled fp8 (WAN_KEYS.md): a marker tensor ``scaled_fp8`` and per Linear an fp8 ``.weight``
plus a float32 ``.scale_weight``; the real weight is ``weight.float() * scale_weight``.
diffusers' ``from_single_file`` drops the scales and loads wrong weights without an error, so
the scales are applied here, one tensor at a time (no fp32 copy of the model).
"""
from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger(__name__)

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIX = ".scale_weight"
MARKER = "scaled_fp8"
STORAGE_DTYPE = torch.float8_e4m3fn


def is_scaled(keys) -> bool:
    return any(k.endswith(SCALE_SUFFIX) or k.split(".")[-1] == MARKER for k in keys)


def dequantize_scaled(state_dict: dict[str, torch.Tensor], dtype_for) -> int:
    """Apply every ``.scale_weight`` in place; drop scales and markers. Returns layers scaled.

    ``dtype_for(key, file_dtype)`` gives each weight's dtype in memory (e.g. bf16).
    """
    scaled = 0
    for key in [k for k in state_dict if k.endswith(SCALE_SUFFIX)]:
        scale = state_dict.pop(key).float()
        wkey = key[: -len(SCALE_SUFFIX)] + ".weight"
        if wkey not in state_dict:
            raise KeyError(f"scaled fp8 file has {key} but no {wkey}: the file is damaged")
        weight = state_dict[wkey]
        target = dtype_for(wkey, torch.float32)
        state_dict[wkey] = (weight.float() * scale).to(target)
        scaled += 1
    for key in [k for k in state_dict if k.split(".")[-1] == MARKER or k.endswith(".scale_input")]:
        state_dict.pop(key)
    return scaled


def upcast_plain(state_dict: dict[str, torch.Tensor], dtype_for) -> int:
    """fp8 tensors of a plain fp8_e4m3fn file into their in-memory dtype (values are exact)."""
    n = 0
    for key, t in state_dict.items():
        if t.dtype in FP8_DTYPES:
            target = dtype_for(key, torch.float32)
            if target not in FP8_DTYPES:
                state_dict[key] = t.to(target)
                n += 1
    return n


def stored_in_fp8(module: torch.nn.Module) -> bool:
    """Whether any weight of ``module`` is kept in fp8 (fp8 storage)."""
    return any(p.dtype in FP8_DTYPES for p in module.parameters())


def skip_patterns(model_cls: type) -> tuple[str, ...]:
    """The module patterns diffusers' ``enable_layerwise_casting`` keeps in the compute dtype."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    return (tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(model_cls._keep_in_fp32_modules or ())
            + tuple(model_cls._skip_layerwise_casting_patterns or ()))


def storage_policy(policy, model_cls: type):
    """``policy`` with fp8 for every Linear/conv weight that fp8 storage keeps in fp8, so the
    loader reads those tensors straight into fp8 (no 16-bit copy of the DiT ever exists)."""
    patterns = [re.compile(p) for p in skip_patterns(model_cls)]

    def fp8_policy(key: str, file_dtype: torch.dtype) -> torch.dtype:
        target = policy(key, file_dtype)
        if not target.is_floating_point or not key.endswith(".weight"):
            return target
        parts = key.split(".")[:-1]
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(p.search(pre) for p in patterns for pre in prefixes):
            return target
        return STORAGE_DTYPE
    return fp8_policy


def _weight_cast_hook():
    from diffusers.hooks.layerwise_casting import LayerwiseCastingHook

    class WeightCastHook(LayerwiseCastingHook):
        """diffusers' layerwise casting for the weight only: the bias (small; a LoRA's
        ``diff_b`` lands there) stays in the compute dtype instead of being rounded to fp8."""

        def initialize_hook(self, module):
            module.weight.data = module.weight.data.to(self.storage_dtype)
            return module

        def pre_forward(self, module, *args, **kwargs):
            module.weight.data = module.weight.data.to(self.compute_dtype, non_blocking=self.non_blocking)
            return args, kwargs

        def post_forward(self, module, output):
            module.weight.data = module.weight.data.to(self.storage_dtype, non_blocking=self.non_blocking)
            return output
    return WeightCastHook


def enable_fp8_storage(transformer: torch.nn.Module, compute_dtype: torch.dtype) -> int:
    """Keep the DiT's Linear/conv weights in fp8 and upcast each one while its layer runs (half
    the memory of bf16; outputs differ by fp8 rounding of the weights). The layers are the ones
    diffusers' ``enable_layerwise_casting`` picks (same skip patterns, same hook name, so
    diffusers sees it as layerwise casting); biases stay in ``compute_dtype``.

    Any fp8 tensor left outside a cast layer goes to the compute dtype, so nothing fp8 is ever
    computed with. Returns how many weights are stored in fp8.
    """
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layerwise_casting import _GO_LC_SUPPORTED_PYTORCH_LAYERS, _LAYERWISE_CASTING_HOOK

    hook_cls = _weight_cast_hook()
    patterns = [re.compile(p) for p in skip_patterns(type(transformer))]
    stored = 0
    for name, module in transformer.named_modules():
        parts = name.split(".")
        skipped = any(p.search(".".join(parts[:i])) for p in patterns for i in range(1, len(parts) + 1))
        if isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS) and name and not skipped:
            registry = HookRegistry.check_if_exists_or_initialize(module)
            registry.register_hook(hook_cls(STORAGE_DTYPE, compute_dtype, False), _LAYERWISE_CASTING_HOOK)
            stored += 1
            continue
        own = [p for p in module.parameters(recurse=False) if p.dtype in FP8_DTYPES]
        if own:
            log.warning("fp8 storage: %s is not cast per layer; keeping it in %s", name, compute_dtype)
            for p in own:
                p.data = p.data.to(compute_dtype)
    log.info("DiT: %d weights stored in fp8, computed in %s", stored, compute_dtype)
    return stored
