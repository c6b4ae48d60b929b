"""Model-set layouts: ``diffusers``, the original Wan-AI layout (``wan``), ComfyUI single files
(``comfy``).

``LAYOUTS`` is the one list of layouts. ``volume`` imports it to scan, ``assemble`` to build;
nothing here imports either of them back. Scanning is torch-free: each ``build`` imports its
module (and torch) on first use, so the CLI stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import WanVolumeError
from ..modelset import ModelSet
from . import comfy_files, diffusers_folder, wan_original
from .spec import LoadSpec

__all__ = ["LAYOUTS", "Layout", "LoadSpec", "layout_named"]


@dataclass(frozen=True)
class Layout:
    name: str
    scan: Callable[[Path], list[ModelSet]]            # one models dir -> the sets found there
    build: Callable[[ModelSet, LoadSpec], object]      # a complete set -> WanImageToVideoPipeline
    describe: str = ""


def _build_diffusers(model_set: ModelSet, spec: LoadSpec):
    from .diffusers_fast import build_diffusers_fast
    return build_diffusers_fast(model_set, spec)


def _build_wan(model_set: ModelSet, spec: LoadSpec):
    from .single_files import build_wan
    return build_wan(model_set, spec)


def _build_comfy(model_set: ModelSet, spec: LoadSpec):
    from .single_files import build_comfy
    return build_comfy(model_set, spec)


LAYOUTS: tuple[Layout, ...] = (
    Layout(diffusers_folder.LAYOUT, diffusers_folder.scan_diffusers, _build_diffusers,
           "a diffusers folder with model_index.json"),
    Layout(wan_original.LAYOUT, wan_original.scan_wan, _build_wan,
           "Wan-AI's original folder (config.json, DiT shards, .pth files)"),
    Layout(comfy_files.LAYOUT, comfy_files.scan_comfy, _build_comfy,
           "ComfyUI's folders (diffusion_models/, text_encoders/, clip_vision/, vae/)"),
)


def layout_named(name: str) -> Layout:
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise WanVolumeError("unknown model-set layout", field="layout", value=name,
                         fix=f"use one of {', '.join(x.name for x in LAYOUTS)}")
