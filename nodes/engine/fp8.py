"""fp8 weights: ComfyUI's scaled fp8 files, and optional fp8 storage with per-layer upcast.

Scaled fp8 (WAN_KEYS.md): a marker tensor ``scaled_fp8`` and per Linear an fp8 ``.weight``
plus a float32 ``.scale_weight``; the real weight is ``weight.float() * scale_weight``.
diffusers' ``from_single_file`` drops the scales and loads wrong weights without an error, so
the scales are applied here, one tensor at a time (no fp32 copy of the model).
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIX = ".scale_weight"
MARKER = "scaled_fp8"


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


def enable_fp8_storage(transformer: torch.nn.Module, compute_dtype: torch.dtype) -> None:
    """Keep the DiT's Linear/conv weights in fp8 and upcast each layer as it runs (half the
    memory of bf16; outputs differ from bf16 by fp8 rounding of weights that were not fp8)."""
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                         compute_dtype=compute_dtype)
    log.info("DiT weights stored in fp8, computed in %s", compute_dtype)
