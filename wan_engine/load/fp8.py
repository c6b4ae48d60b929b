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
            self.weight_scale = (torch.ones(()) if scale is None else scale).float().reshape(())
            self.stored = None
            self.matmul = False   # fp8 matmul instead of the upcast (speed option fp8_matmul)

        def initialize_hook(self, module):
            if self.scale is None:
                module.weight.data = module.weight.data.to(self.storage_dtype)
            return module

        def pre_forward(self, module, *args, **kwargs):
            if self.matmul:
                return args, kwargs
            weight = module.weight.data
            if self.scale is None:
                module.weight.data = weight.to(self.compute_dtype, non_blocking=self.non_blocking)
            else:
                self.stored = weight
                module.weight.data = weight.to(self.compute_dtype, non_blocking=self.non_blocking) * self.scale
            return args, kwargs

        def new_forward(self, module, *args, **kwargs):
            if self.matmul:
                x = args[0] if args else kwargs["input"]
                if self.weight_scale.device != x.device:   # moved once, not per call
                    self.weight_scale = self.weight_scale.to(x.device)
                return scaled_linear(x, module.weight.data, self.weight_scale, module.bias)
            return self.fn_ref.original_forward(*args, **kwargs)

        def post_forward(self, module, output):
            if self.matmul:
                return output
            if self.scale is None:
                module.weight.data = module.weight.data.to(self.storage_dtype, non_blocking=self.non_blocking)
            elif self.stored is not None:
                module.weight.data, self.stored = self.stored, None
            return output
    return WeightCastHook


FP8_MAX = float(torch.finfo(STORAGE_DTYPE).max)   # 448
MATMUL_MULTIPLE = 16   # cuBLASLt's fp8 GEMM wants both weight dimensions divisible by 16
MATMUL_CAPABILITY = (8, 9)   # fp8 tensor cores: Ada (8.9) and Hopper (9.0) and later


def scaled_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight.to(x.dtype) * weight_scale, bias)`` as one fp8 matmul
    (``torch._scaled_mm``; ``weight_scale``: 0-dim float32 on ``x``'s device). ``x`` is quantised
    to e4m3fn with one scale per tensor (its absolute maximum maps to 448), the product
    accumulates in float32 and comes out in ``x.dtype``. Lossy: the activations lose precision
    to fp8 as the weights already have."""
    lead, k = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, k)
    amax = flat.abs().amax().float().clamp(min=1e-12)
    x_scale = (amax / FP8_MAX).reshape(())
    x8 = (flat.float() / x_scale).clamp_(-FP8_MAX, FP8_MAX).to(STORAGE_DTYPE)
    out = torch._scaled_mm(x8, weight.t(), scale_a=x_scale, scale_b=weight_scale, out_dtype=x.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.reshape(*lead, out.shape[-1])


def matmul_capable(device: torch.device) -> str | None:
    """Why ``device`` cannot run fp8 matmuls, or None where it can (the CPU runs them through
    oneDNN, slowly: useful for checking, not for speed)."""
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"fp8 matmul runs on CUDA GPUs (and the CPU), not on {device.type}"
    cap = torch.cuda.get_device_capability(device)
    if tuple(cap) < MATMUL_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} has compute capability {cap[0]}.{cap[1]}; fp8 "
                f"matmul needs {MATMUL_CAPABILITY[0]}.{MATMUL_CAPABILITY[1]} or later (L4, L40S, RTX 4090, "
                f"H100, H200)")
    return None


def set_fp8_matmul(transformer: torch.nn.Module, on: bool) -> int:
    """Switch the fp8-stored Linear layers between the per-layer upcast (off) and fp8 matmuls
    (on); the hooks stay registered, only their mode changes. Layers whose weight dimensions
    are not multiples of 16 keep the upcast. Returns how many layers run fp8 matmuls."""
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    count = 0
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(_LAYERWISE_CASTING_HOOK) if registry is not None else None
        if not hasattr(hook, "matmul"):
            continue
        fits = (isinstance(module, torch.nn.Linear) and module.weight.dtype == STORAGE_DTYPE
                and module.in_features % MATMUL_MULTIPLE == 0
                and module.out_features % MATMUL_MULTIPLE == 0)
        hook.matmul = bool(on and fits)
        count += hook.matmul
    return count


def upcast_weight(module: torch.nn.Module) -> torch.Tensor:
    """The weight a layer under fp8 storage computes with (what its cast hook makes of it)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    hook = HookRegistry.check_if_exists_or_initialize(module).get_hook(_LAYERWISE_CASTING_HOOK)
    matmul, hook.matmul = getattr(hook, "matmul", False), False   # the upcast, even in fp8 matmul mode
    hook.pre_forward(module)
    try:
        return module.weight.data.clone()
    finally:
        hook.post_forward(module, None)
        hook.matmul = matmul


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
