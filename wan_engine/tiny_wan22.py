"""A tiny random-weight Wan2.2 I2V A14B set: two experts (high noise, low noise), no CLIP branch.

Each expert is the Wan2.1 I2V DiT without ``img_emb``/``k_img``/``v_img`` (``image_dim`` None),
36 input channels (16 noise + 4 mask + 16 image latent); the experts are seeded differently, so
their weights differ and swapping them changes the video. The VAE, umT5 and tokenizer are the
tiny Wan2.1 set's (Wan2.2 A14B uses the same ones). Built offline, seeded, in seconds.
"""
from __future__ import annotations

import logging
from pathlib import Path

from . import tiny_model

log = logging.getLogger(__name__)

TINY_WAN22_NAME = "Wan2.2-I2V-tiny-demo-Diffusers"
EXPERT_CONFIG = dict(tiny_model.TRANSFORMER_CONFIG, image_dim=None, added_kv_proj_dim=None)
BOUNDARY = 0.9          # Wan2.2 I2V A14B's boundary (wan/configs/wan_i2v_A14B.py)
HIGH_SEED, LOW_SEED = 21, 22


def build_expert(seed: int):
    """One expert (a ``WanTransformer3DModel`` without the image branch), seeded."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    expert = WanTransformer3DModel(**EXPERT_CONFIG)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():                      # Wan zero-inits some projections
        for p in expert.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return expert


def build_components(seed: int = 0) -> dict:
    """Every component of a Wan2.2 I2V pipeline: ``transformer`` (high), ``transformer_2`` (low)."""
    parts = tiny_model.build_components(seed)
    parts.update(transformer=build_expert(HIGH_SEED + seed), transformer_2=build_expert(LOW_SEED + seed),
                 image_encoder=None, image_processor=None)
    for part in parts.values():          # inference mode: umT5's dropout off, as from_pretrained does
        if hasattr(part, "eval"):
            part.eval()
    return parts


def pipeline(components: dict, boundary: float | None = BOUNDARY):
    """diffusers' own two-expert pipeline over ``components`` (the reference in the tests)."""
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline(**components, boundary_ratio=boundary)


def write_diffusers_set(dest: Path, seed: int = 0, components: dict | None = None) -> Path:
    """The set as ``Wan-AI/Wan2.2-I2V-A14B-Diffusers`` lays it out (transformer/, transformer_2/,
    ``image_encoder`` null, ``boundary_ratio`` in model_index.json)."""
    dest = Path(dest)
    pipeline(components or build_components(seed)).save_pretrained(dest, safe_serialization=True)
    (dest / "README.txt").write_text(
        "Tiny random-weight Wan2.2 I2V (two experts) set made by ComfyUI-WanVolume for demos and tests.\n")
    log.info("wrote tiny Wan2.2 set to %s", dest)
    return dest

