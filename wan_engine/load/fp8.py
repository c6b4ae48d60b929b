"""fp8 weights: ComfyUI's scaled fp8 files, and optional fp8 storage with per-layer upcast.

fp8 storage applies to any source dtype (bf16/fp16/fp32/fp8 files) and any compute precision;
the loader reads the stored tensors straight into fp8 (``storage_policy``), so loading peaks
below a bf16 load.

Scaled fp8 (WAN_KEYS.md): a marker tensor ``scaled_fp8`` and per Linear an fp8 ``.weight``
plus a float32 ``.scale_weight``; the real weight is ``weight * scale_weight``.
diffusers' ``from_single_file`` drops the scales and loads wrong weights without an error, so
the scales are applied here with ComfyUI's semantics (``weight.to(dtype) * scale.to(dtype)``):
at load time for a weight read into bf16/fp16/fp32, or per layer while it computes for a weight
kept in fp8 by fp8 storage (the scale stays with the layer; fp8 never holds a scaled value).
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


def weight_scales(scale_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"<layer>.scale_weight": t}`` (our key names) -> ``{"<layer>.weight": 0-dim float32}``."""
    return {k[: -len(SCALE_SUFFIX)] + ".weight": t.float().reshape(())
            for k, t in scale_tensors.items() if k.endswith(SCALE_SUFFIX)}


def kept_scales(state_dict: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """After a load that applied ``scales`` to every weight it converted (fastload): drop the
    scales and markers from ``state_dict`` and return the scales of the weights still in fp8
    (fp8 storage), ``{weight key: scale}``, for their layers (``enable_fp8_storage``)."""
    for key in [k for k in state_dict if k.endswith((SCALE_SUFFIX, ".scale_input"))
                or k.split(".")[-1] == MARKER]:
        state_dict.pop(key)
    missing = [k for k in scales if k not in state_dict]
    if missing:
        raise KeyError(f"scaled fp8 file has a scale for {missing[0]} but no such weight: the file is damaged")
    return {k: s for k, s in scales.items() if state_dict[k].dtype in FP8_DTYPES}


def read_dtype(policy):
    """A fastload ``dtype_for``: fp8 tensors that ``policy`` keeps in fp8 are read as they are
    (no fp8 to fp8 re-rounding); everything else straight into its dtype in memory."""
    def dtype_for(key: str, file_dtype: torch.dtype) -> torch.dtype:
        target = policy(key, file_dtype)
        return file_dtype if file_dtype in FP8_DTYPES and target in FP8_DTYPES else target
    return dtype_for


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
        ``diff_b`` lands there) stays in the compute dtype instead of being rounded to fp8.

        With a ``scale`` (scaled fp8 files) the layer computes with ComfyUI's upcast,
        ``weight.to(dtype) * scale.to(dtype)``, and gets its very fp8 tensor back after the call:
        the scaled value is never rounded to fp8."""

        def __init__(self, storage_dtype, compute_dtype, non_blocking, scale=None):
            super().__init__(storage_dtype, compute_dtype, non_blocking)
            # A 0-dim CPU tensor multiplies a tensor on any device as a scalar.
            self.scale = None if scale is None else scale.to(compute_dtype).reshape(())
            self.stored = None

        def initialize_hook(self, module):
            if self.scale is None:
                module.weight.data = module.weight.data.to(self.storage_dtype)
            return module

        def pre_forward(self, module, *args, **kwargs):
            weight = module.weight.data
            if self.scale is None:
                module.weight.data = weight.to(self.compute_dtype, non_blocking=self.non_blocking)
            else:
                self.stored = weight
                module.weight.data = weight.to(self.compute_dtype, non_blocking=self.non_blocking) * self.scale
            return args, kwargs

        def post_forward(self, module, output):
            if self.scale is None:
                module.weight.data = module.weight.data.to(self.storage_dtype, non_blocking=self.non_blocking)
            elif self.stored is not None:
                module.weight.data, self.stored = self.stored, None
            return output
    return WeightCastHook


def upcast_weight(module: torch.nn.Module) -> torch.Tensor:
    """The weight a layer under fp8 storage computes with (what its cast hook makes of it)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    hook = HookRegistry.check_if_exists_or_initialize(module).get_hook(_LAYERWISE_CASTING_HOOK)
    hook.pre_forward(module)
    try:
        return module.weight.data.clone()
    finally:
        hook.post_forward(module, None)


def enable_fp8_storage(transformer: torch.nn.Module, compute_dtype: torch.dtype,
                       scales: dict[str, torch.Tensor] | None = None) -> int:
    """Keep the DiT's Linear/conv weights in fp8 and upcast each one while its layer runs (half
    the memory of bf16; outputs differ by fp8 rounding of the weights). The layers are the ones
    diffusers' ``enable_layerwise_casting`` picks (same skip patterns, same hook name, so
    diffusers sees it as layerwise casting); biases stay in ``compute_dtype``.

    Any fp8 tensor left outside a cast layer goes to the compute dtype, so nothing fp8 is ever
    computed with. ``scales`` (``{weight key: scale}`` of a scaled fp8 file, from
    ``dequantize_scaled``) go with their layers. Returns how many weights are stored in fp8.
    """
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layerwise_casting import _GO_LC_SUPPORTED_PYTORCH_LAYERS, _LAYERWISE_CASTING_HOOK

    hook_cls = _weight_cast_hook()
    scales = dict(scales or {})
    patterns = [re.compile(p) for p in skip_patterns(type(transformer))]
    stored = 0
    for name, module in transformer.named_modules():
        parts = name.split(".")
        skipped = any(p.search(".".join(parts[:i])) for p in patterns for i in range(1, len(parts) + 1))
        if isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS) and name and not skipped:
            registry = HookRegistry.check_if_exists_or_initialize(module)
            scale = scales.pop(f"{name}.weight", None)
            registry.register_hook(hook_cls(STORAGE_DTYPE, compute_dtype, False, scale), _LAYERWISE_CASTING_HOOK)
            stored += 1
            continue
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.dtype in FP8_DTYPES]
        if own:
            log.warning("fp8 storage: %s is not cast per layer; keeping it in %s", name, compute_dtype)
            for n, p in own:
                scale = scales.pop(f"{name}.{n}" if name else n, None)
                p.data = p.data.to(compute_dtype) * (1 if scale is None else scale.to(compute_dtype))
    if scales:
        raise KeyError(f"scaled fp8: {len(scales)} scales without a layer (e.g. {next(iter(scales))})")
    log.info("DiT: %d weights stored in fp8, computed in %s", stored, compute_dtype)
    return stored
