"""ComfyUI single files: one model set per I2V DiT in ``diffusion_models/`` (or ``unet/``).

Each DiT is paired with the best umt5 in ``text_encoders/`` (or ``clip/``), ``clip_vision_h``
and ``wan_2.1_vae``. The tokenizer is ``tokenizers/umt5-xxl/`` when that folder exists, else it
is built from the ``spiece_model`` tensor ComfyUI's umt5 files carry (layouts/spiece.py), so a
plain ComfyUI models folder is complete. Folders come per kind, so ComfyUI's own folders and
those of ``extra_model_paths.yaml`` (a DiT in one, the VAE in another) combine into one set.
Torch-free: only safetensors headers are read.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from .. import stfile
from ..identify import SPIECE_TENSOR as SPIECE, is_i2v_dit
from ..modelset import ModelSet

log = logging.getLogger(__name__)

LAYOUT = "comfy"
# kind (ComfyUI's folder_paths name) -> sub-folders of a models dir that hold it
SUBDIRS = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip"),
           "clip_vision": ("clip_vision",), "vae": ("vae",)}
# Preferred first: full precision before fp8.
UMT5_ORDER = ("umt5_xxl_fp16", "umt5_xxl_bf16", "umt5_xxl_fp32", "umt5_xxl_fp8_e4m3fn_scaled",
              "umt5_xxl_fp8_e4m3fn")
CLIP_VISION = "clip_vision_h.safetensors"
VAE = "wan_2.1_vae.safetensors"
TOKENIZER = "tokenizers/umt5-xxl"
FIX = "run `python wanvolume.py preload --profile comfy-720p-bf16` (or comfy-720p-fp8)"


def scan_comfy(models_dir: Path) -> list[ModelSet]:
    """The sets of one models dir laid out as ComfyUI's ``models/`` folder."""
    models_dir = Path(models_dir)
    kinds = {k: [models_dir / s for s in subs] for k, subs in SUBDIRS.items()}
    return scan_folders(kinds, root=models_dir)


def scan_folders(kinds: Mapping[str, Sequence[Path]], root: Path | None = None) -> list[ModelSet]:
    """One set per I2V DiT in ``kinds["diffusion_models"]``; partners from the other kinds.

    ``missing`` names the partners found in none of the folders of their kind.
    """
    dits = [f for d in kinds.get("diffusion_models", ()) for f in sorted(Path(d).glob("*.safetensors"))
            if _is_i2v(f)]
    if not dits:
        return []
    shared, missing = _partners(kinds, root)
    sets = []
    for f in dits:
        label = f"{f.stem} (ComfyUI files"
        if "text_encoder" in shared:
            label += f", {shared['text_encoder'].stem}"
        sets.append(ModelSet(name=f"comfy/{f.stem}", layout=LAYOUT, root=root or f.parent.parent,
                             components={"transformer": f, **shared}, missing=list(missing),
                             label=label + ")" + (f" missing {', '.join(missing)}" if missing else "")))
    return sets


def _is_i2v(path: Path) -> bool:
    try:
        return is_i2v_dit(list(stfile.read_header(path).tensors))
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: unreadable safetensors header (%s)", path, exc)
        return False


def _first(folders: Sequence[Path], name: str) -> Path | None:
    return next((Path(d) / name for d in folders if (Path(d) / name).is_file()), None)


def _partners(kinds: Mapping[str, Sequence[Path]], root: Path | None) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    missing: list[str] = []
    umt5 = _best_umt5(kinds.get("text_encoders", ()))
    if umt5:
        found["text_encoder"] = umt5
    else:
        missing.append("text_encoders/umt5_xxl_fp16.safetensors")
    for comp, kind, name in (("image_encoder", "clip_vision", CLIP_VISION), ("vae", "vae", VAE)):
        path = _first(kinds.get(kind, ()), name)
        if path:
            found[comp] = path
        else:
            missing.append(f"{kind}/{name}")
    tokenizer = _tokenizer_folder(kinds, root)
    if tokenizer:
        found["tokenizer"] = tokenizer
    elif umt5 and not _has_spiece(umt5):
        missing.append(f"{TOKENIZER}/ (the umt5 file has no {SPIECE} tensor)")
    return found, missing


def _tokenizer_folder(kinds: Mapping[str, Sequence[Path]], root: Path | None) -> Path | None:
    """``tokenizers/umt5-xxl`` next to the text encoders' folder (or in ``root``), if present."""
    bases = ([Path(root)] if root else []) + [Path(d).parent for d in kinds.get("text_encoders", ())]
    return next((b / TOKENIZER for b in bases if (b / TOKENIZER).is_dir()), None)


def _has_spiece(path: Path) -> bool:
    try:
        return SPIECE in stfile.read_header(path).tensors
    except (OSError, ValueError):
        return False


def _best_umt5(folders: Sequence[Path]) -> Path | None:
    files = [f for d in folders for f in sorted(Path(d).glob("umt5_xxl*.safetensors"))]
    for stem in UMT5_ORDER:
        for f in files:
            if f.stem == stem:
                return f
    return files[0] if files else None
