"""Finding model sets on disk, one scanner per layout: ``diffusers``, the original Wan-AI layout
(``wan``), ComfyUI single files (``comfy``).

``SCANS`` is the one list of layouts the store knows; ``load.layouts`` builds each by its name.
Torch-free: only folder listings and safetensors headers are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..modelset import ModelSet
from . import comfy_files, diffusers_folder, wan_original

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
)
