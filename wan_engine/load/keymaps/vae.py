"""Wan2.1 VAE: Wan's ``WanVAE_`` (``Wan2.1_VAE.pth``, ComfyUI ``wan_2.1_vae.safetensors``) <->
diffusers ``AutoencoderKLWan``. WAN_KEYS.md "VAE".

The decoder's flat ``upsamples.M`` list depends on ``num_res_blocks`` (diffusers' converter
hard-codes 2), so the map takes it, and ``infer_config`` reads it from the weights.
"""
from __future__ import annotations

import re

from .common import KeyMap

_TOP = KeyMap((
    ("encoder.conv1", "encoder.conv_in"), ("decoder.conv1", "decoder.conv_in"),
    ("encoder.head.0", "encoder.norm_out"), ("encoder.head.2", "encoder.conv_out"),
    ("decoder.head.0", "decoder.norm_out"), ("decoder.head.2", "decoder.conv_out"),
    ("conv1", "quant_conv"), ("conv2", "post_quant_conv"),
    ("encoder.middle.0", "encoder.mid_block.resnets.0"),
    ("encoder.middle.1", "encoder.mid_block.attentions.0"),
    ("encoder.middle.2", "encoder.mid_block.resnets.1"),
    ("decoder.middle.0", "decoder.mid_block.resnets.0"),
    ("decoder.middle.1", "decoder.mid_block.attentions.0"),
    ("decoder.middle.2", "decoder.mid_block.resnets.1"),
    ("encoder.downsamples.{n}", "encoder.down_blocks.{n}"),
))
_RESNET = (("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
           ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut."))
_UP_WAN = re.compile(r"^decoder\.upsamples\.(\d+)\.")
_UP_DIFF = re.compile(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.")


def wan_to_diffusers(key: str, num_res_blocks: int) -> str | None:
    m = _UP_WAN.match(key)
    if m:
        i, j = divmod(int(m.group(1)), num_res_blocks + 2)
        inner = f"resnets.{j}" if j <= num_res_blocks else "upsamplers.0"
        new = f"decoder.up_blocks.{i}.{inner}.{key[m.end():]}"
    else:
        new = _TOP.to_ours(key)
        if new is None:
            return None
    return _resnet_names(new, forward=True)


def diffusers_to_wan(key: str, num_res_blocks: int) -> str | None:
    key = _resnet_names(key, forward=False)
    m = _UP_DIFF.match(key)
    if m:
        j = int(m.group(3)) if m.group(3) is not None else num_res_blocks + 1
        return f"decoder.upsamples.{int(m.group(1)) * (num_res_blocks + 2) + j}.{key[m.end():]}"
    return _TOP.to_theirs(key)


def _resnet_names(key: str, forward: bool) -> str:
    for wan, diff in _RESNET:
        a, b = (wan, diff) if forward else (diff, wan)
        if f".{a}" in key and not key.startswith(("encoder.conv", "decoder.conv")):
            head, _, tail = key.rpartition(f".{a}")
            if "." not in tail.rstrip("."):    # only the last module level is a resnet part
                return f"{head}.{b}{tail}"
    return key


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``AutoencoderKLWan`` config from Wan-named shapes; the real VAE gives base_dim 96,
    z_dim 16, dim_mult [1, 2, 4, 4], num_res_blocks 2, temporal downsample [F, T, T]."""
    base = shapes["encoder.conv1.weight"][0]
    entries: dict[int, str] = {}
    for k in shapes:
        m = re.match(r"^encoder\.downsamples\.(\d+)\.(residual|resample|time_conv)", k)
        if m:
            kind = "res" if m.group(2) == "residual" else "down"
            if entries.get(int(m.group(1))) != "down":
                entries[int(m.group(1))] = kind
    order = [entries[i] for i in sorted(entries)]
    levels = order.count("down") + 1
    nrb = order.count("res") // levels
    dim_mult, temporal, level_out = [], [], 0
    for i, kind in enumerate(order):
        if kind == "res":
            level_out = shapes[f"encoder.downsamples.{i}.residual.6.weight"][0]
        else:
            dim_mult.append(level_out // base)
            temporal.append(f"encoder.downsamples.{i}.time_conv.weight" in shapes)
    dim_mult.append(level_out // base)
    return dict(base_dim=base, z_dim=shapes["conv1.weight"][0] // 2, dim_mult=dim_mult,
                num_res_blocks=nrb, temperal_downsample=temporal)
