"""What a model file is, told from its header's tensor names (never from its file name).

Torch-free, so the store can recognise files without loading anything; the loaders' key maps
(load/keymaps/) build on the same facts.
"""
from __future__ import annotations

from typing import Iterable

# ComfyUI's umt5 files carry the sentencepiece model as a uint8 tensor of this name.
SPIECE_TENSOR = "spiece_model"


def is_i2v_dit(keys: Iterable[str]) -> bool:
    """An I2V DiT carries the CLIP image branch (``img_emb`` / ``k_img``)."""
    return any(".k_img." in k or "img_emb." in k for k in keys)
