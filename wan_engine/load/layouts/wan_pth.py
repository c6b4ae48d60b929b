"""Wan's ``.pth`` components (T5, CLIP, VAE) into transformers/diffusers modules.

Every key of the file must either land in the module or be on the documented ignore list
(``keymaps.clip.IGNORED``); anything else is an error, so nothing is silently dropped.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..keymaps import clip, t5, vae
from . import build
from .pth import load_pth
from .spec import LoadSpec

log = logging.getLogger(__name__)


def map_t5(raw: dict[str, torch.Tensor]) -> tuple[dict[str, str], list[str]]:
    """Wan T5 key -> transformers key, and the keys with no place."""
    mapping = {k: t5.T5.to_ours(k) for k in raw}
    return {k: v for k, v in mapping.items() if v}, [k for k, v in mapping.items() if not v]


def read_t5(path: Path, dtype: torch.dtype, spec: LoadSpec | None = None):
    from transformers import UMT5EncoderModel

    raw = load_pth(path, spec)
    mapping, unknown = map_t5(raw)
    _fail_on_unknown(unknown, "umt5 text encoder", path)
    policy = build.dtype_policy(UMT5EncoderModel, dtype)
    sd = {new: raw[old].to(policy(new, raw[old].dtype), copy=True) for old, new in mapping.items()}
    del raw
    config = t5.infer_config({k: tuple(v.shape) for k, v in sd.items()})
    return build.build_text_encoder(sd, config, path)


def convert_clip(raw: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """transformers CLIP vision tensors (fp32 copies) and the keys of unknown meaning."""
    sd, unknown = {}, []
    for key, tensor in raw.items():
        try:
            for new, t in clip.convert(key, tensor).items():
                sd[new] = t.to(torch.float32, copy=True).contiguous()
        except KeyError:
            unknown.append(key)
    return sd, unknown


def read_clip(path: Path, spec: LoadSpec | None = None):
    raw = load_pth(path, spec)
    sd, unknown = convert_clip(raw)
    del raw
    _fail_on_unknown(unknown, "CLIP vision", path)
    config = clip.infer_config({k: tuple(v.shape) for k, v in sd.items()})
    return build.build_image_encoder(sd, config, path)


def read_vae(path: Path, spec: LoadSpec | None = None):
    raw = load_pth(path, spec)
    config = vae.infer_config({k: tuple(v.shape) for k, v in raw.items()})
    nrb = config["num_res_blocks"]
    sd, unknown = {}, []
    for key, tensor in raw.items():
        new = vae.wan_to_diffusers(key, nrb)
        if new is None:
            unknown.append(key)
        else:
            sd[new] = tensor.to(torch.float32, copy=True)
    del raw
    _fail_on_unknown(unknown, "VAE", path)
    return build.build_vae(sd, config, path)


def _fail_on_unknown(unknown: list[str], what: str, path: Path) -> None:
    if unknown:
        raise build.IncompatibleWeights(
            f"{what}: {len(unknown)} keys of unknown meaning (e.g. {unknown[:3]})", field="file",
            value=str(path), fix="use the file published in Wan-AI/Wan2.1-I2V-14B-720P")
