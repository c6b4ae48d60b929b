"""Model-set layouts: original Wan-AI (``wan``), ComfyUI single files (``comfy``), and a fast
reader for the big components of the ``diffusers`` layout.

``volume.py`` calls ``register_scanners()`` and ``assemble.py`` calls ``register_builders()`` at
their ends, so importing either is enough. The entries import their modules on first use, which
keeps scanning free of torch and avoids import cycles.
"""
from __future__ import annotations

from pathlib import Path


def scan_wan(models_dir: Path) -> list:
    from .wan_original import scan_wan as scan
    return scan(models_dir)


def scan_comfy(models_dir: Path) -> list:
    from .comfy_files import scan_comfy as scan
    return scan(models_dir)


def build_wan(model_set, dtype):
    from .wan_original import build_wan as build
    return build(model_set, dtype)


def build_comfy(model_set, dtype):
    from .comfy_files import build_comfy as build
    return build(model_set, dtype)


def build_diffusers(model_set, dtype):
    from .diffusers_fast import build_diffusers_fast as build
    return build(model_set, dtype)


def register_scanners() -> None:
    from .. import volume

    for scan in (scan_wan, scan_comfy):
        if scan not in volume.SCANNERS:
            volume.SCANNERS.append(scan)


def register_builders() -> None:
    from .. import assemble

    assemble.BUILDERS.setdefault("comfy", build_comfy)
    assemble.BUILDERS.setdefault("wan", build_wan)
    assemble.BUILDERS.setdefault("diffusers", build_diffusers)
