"""Building a found model set into a pipeline, one builder per layout the store scans
(``store.scan.SCANS``): ``diffusers``, the original Wan-AI layout (``wan``), ComfyUI single files
(``comfy``), and Wan2.2's two-expert sets in the last two (``wan22``, ``wan22-comfy``; a
Wan2.2 diffusers folder builds through ``diffusers``).

Each ``build`` imports its module (and torch) on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...errors import WanVolumeError
from ...store.modelset import ModelSet
from ...store.scan import SCANS
from .spec import LoadSpec

__all__ = ["LAYOUTS", "Layout", "LoadSpec", "layout_named"]


@dataclass(frozen=True)
class Layout:
    name: str
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


def _build_wan22(model_set: ModelSet, spec: LoadSpec):
    from .wan22 import build_wan22
    return build_wan22(model_set, spec)


_BUILDERS = {"diffusers": _build_diffusers, "wan": _build_wan, "comfy": _build_comfy,
             "wan22": _build_wan22, "wan22-comfy": _build_wan22}
LAYOUTS: tuple[Layout, ...] = tuple(Layout(s.name, _BUILDERS[s.name], s.describe) for s in SCANS)


def layout_named(name: str) -> Layout:
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise WanVolumeError("unknown model-set layout", field="layout", value=name,
                         fix=f"use one of {', '.join(x.name for x in LAYOUTS)}")
