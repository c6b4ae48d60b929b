"""Finding model sets on disk, one scanner per layout: ``diffusers``, the original Wan-AI layout
(``wan``), ComfyUI single files (``comfy``); Wan2.2's two-expert sets in the original layout
(``wan22``) and in ComfyUI's folders (``wan22-comfy``; the diffusers scanner finds both families).

``SCANS`` is the one list of layouts the store knows; ``load.layouts`` builds each by its name.
Torch-free: only folder listings and safetensors headers are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..modelset import ModelSet
from . import comfy_files, diffusers_folder, wan22, wan_original

__all__ = ["SCANS", "Scan"]


@dataclass(frozen=True)
class Scan:
    name: str
    scan: Callable[[Path], list[ModelSet]]   # one models dir -> the sets found there
    describe: str = ""


SCANS: tuple[Scan, ...] = (
    Scan(diffusers_folder.LAYOUT, diffusers_folder.scan_diffusers, "a diffusers folder with model_index.json"),
    Scan(wan_original.LAYOUT, wan_original.scan_wan,
         "Wan-AI's original folder (config.json, DiT shards, .pth files)"),
    Scan(comfy_files.LAYOUT, comfy_files.scan_comfy,
         "ComfyUI's folders (diffusion_models/, text_encoders/, clip_vision/, vae/)"),
    Scan(wan22.LAYOUT_WAN, wan22.scan_wan22,
         "Wan-AI's original Wan2.2 folder (high_noise_model/, low_noise_model/, .pth files)"),
    Scan(wan22.LAYOUT_COMFY, wan22.scan_wan22_comfy,
         "Wan2.2 expert pairs in ComfyUI's folders (high/low noise files, umT5, VAE)"),
)
