"""CLIP ViT-H vision tower: Wan's open-clip file (``models_clip_open-clip-xlm-roberta-large-vit-
huge-14.pth``, ``visual.*``) -> transformers ``CLIPVisionModel``. WAN_KEYS.md "CLIP vision".

Not a pure rename: the class/position embeddings drop a leading axis and ``to_qkv`` splits in
three, so this module converts tensors, not only names.
"""
from __future__ import annotations

import re

import torch

from .common import KeyMap

CLIP = KeyMap((
    ("visual.patch_embedding", "embeddings.patch_embedding"),
    ("visual.pre_norm", "pre_layrnorm"),
    ("visual.post_norm", "post_layernorm"),
    ("visual.transformer.{n}.attn.proj", "encoder.layers.{n}.self_attn.out_proj"),
    ("visual.transformer.{n}.norm1", "encoder.layers.{n}.layer_norm1"),
    ("visual.transformer.{n}.norm2", "encoder.layers.{n}.layer_norm2"),
    ("visual.transformer.{n}.mlp.0", "encoder.layers.{n}.mlp.fc1"),
    ("visual.transformer.{n}.mlp.2", "encoder.layers.{n}.mlp.fc2"),
))
# What the Wan file holds that image encoding does not use, and why.
IGNORED = {
    "textual.": "XLM-R text tower (CLIP text side; Wan only encodes images)",
    "log_scale": "CLIP contrastive temperature (training only)",
    "visual.head": "projection to the joint embedding (Wan uses hidden states, not the projection)",
}
_QKV = re.compile(r"^visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)$")
# Not in the weights: 16 heads and exact GELU (ViT-H in Wan, ComfyUI and transformers).
HEAD_DIM = 80


def ignored_reason(key: str) -> str | None:
    for prefix, why in IGNORED.items():
        if key.startswith(prefix):
            return why
    return None


def convert(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers tensors for one Wan key ({} when ignored); raises KeyError when unknown."""
    if ignored_reason(key):
        return {}
    if key == "visual.cls_embedding":
        return {"embeddings.class_embedding": tensor.reshape(-1)}
    if key == "visual.pos_embedding":
        return {"embeddings.position_embedding.weight": tensor.reshape(tensor.shape[-2], -1)}
    m = _QKV.match(key)
    if m:
        q, k, v = tensor.chunk(3, dim=0)
        base = f"encoder.layers.{m.group(1)}.self_attn"
        return {f"{base}.q_proj.{m.group(2)}": q, f"{base}.k_proj.{m.group(2)}": k,
                f"{base}.v_proj.{m.group(2)}": v}
    new = CLIP.to_ours(key)
    if new is None:
        raise KeyError(key)
    return {new: tensor}


def strip_vision_prefix(key: str) -> str:
    """transformers 5 saves without ``vision_model.``; the official repos have it: accept both."""
    return key[len("vision_model."):] if key.startswith("vision_model.") else key


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``CLIPVisionConfig`` kwargs from transformers-named shapes (no ``vision_model.``)."""
    hidden = shapes["embeddings.class_embedding"][0]
    patch = shapes["embeddings.patch_embedding.weight"][-1]
    positions = shapes["embeddings.position_embedding.weight"][0]
    layers = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.layers.")}
    side = round((positions - 1) ** 0.5) * patch
    return dict(hidden_size=hidden, intermediate_size=shapes["encoder.layers.0.mlp.fc1.weight"][0],
                num_hidden_layers=len(layers), num_attention_heads=max(1, hidden // HEAD_DIM),
                image_size=side, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5)
