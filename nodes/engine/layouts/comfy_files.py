"""ComfyUI single files: one model set per I2V DiT in ``diffusion_models/`` (or ``unet/``).

Each DiT is paired with the best umt5 in ``text_encoders/`` (or ``clip/``), ``clip_vision_h``,
``wan_2.1_vae`` and the umt5 tokenizer in ``tokenizers/umt5-xxl/``. Works on any folder with
that structure: the volume's models dir or ComfyUI's own model folders.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..keymaps import dit
from ..volume import ModelSet, safetensors_keys

log = logging.getLogger(__name__)

LAYOUT = "comfy"
DIT_DIRS = ("diffusion_models", "unet")
TEXT_DIRS = ("text_encoders", "clip")
# Preferred first: full precision before fp8.
UMT5_ORDER = ("umt5_xxl_fp16", "umt5_xxl_bf16", "umt5_xxl_fp32", "umt5_xxl_fp8_e4m3fn_scaled",
              "umt5_xxl_fp8_e4m3fn")
CLIP_VISION = "clip_vision/clip_vision_h.safetensors"
VAE = "vae/wan_2.1_vae.safetensors"
TOKENIZER = "tokenizers/umt5-xxl"
FIX = "run `python wanvolume.py preload --profile comfy-720p-bf16` (or comfy-720p-fp8)"


def scan_comfy(models_dir: Path) -> list[ModelSet]:
    """One set per I2V DiT file under ``models_dir``; ``missing`` names absent partners."""
    models_dir = Path(models_dir)
    dits = [f for d in DIT_DIRS for f in sorted((models_dir / d).glob("*.safetensors")) if _is_i2v(f)]
    if not dits:
        return []
    shared, missing = _partners(models_dir)
    sets = []
    for f in dits:
        label = f"{f.stem} (ComfyUI files"
        if "text_encoder" in shared:
            label += f", {shared['text_encoder'].stem}"
        sets.append(ModelSet(name=f"comfy/{f.stem}", layout=LAYOUT, root=models_dir,
                             components={"transformer": f, **shared}, missing=list(missing),
                             label=label + ")" + (f" missing {', '.join(missing)}" if missing else "")))
    return sets


def _is_i2v(path: Path) -> bool:
    try:
        return dit.is_i2v_dit(safetensors_keys(path))
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: unreadable safetensors header (%s)", path, exc)
        return False


def _partners(models_dir: Path) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    missing: list[str] = []
    umt5 = _best_umt5(models_dir)
    if umt5:
        found["text_encoder"] = umt5
    else:
        missing.append("text_encoders/umt5_xxl_fp16.safetensors")
    for comp, rel in (("image_encoder", CLIP_VISION), ("vae", VAE)):
        if (models_dir / rel).is_file():
            found[comp] = models_dir / rel
        else:
            missing.append(rel)
    if (models_dir / TOKENIZER).is_dir():
        found["tokenizer"] = models_dir / TOKENIZER
    else:
        missing.append(TOKENIZER + "/")
    return found, missing


def _best_umt5(models_dir: Path) -> Path | None:
    files = [f for d in TEXT_DIRS for f in sorted((models_dir / d).glob("umt5_xxl*.safetensors"))]
    for stem in UMT5_ORDER:
        for f in files:
            if f.stem == stem:
                return f
    return files[0] if files else None


def build_comfy(model_set: ModelSet, dtype):
    """Assemble the pipeline from the set's single files, offline."""
    from . import build, components

    if model_set.missing:
        raise build.WanVolumeError(f"ComfyUI model set is missing {', '.join(model_set.missing)}",
                                   field="model_set", value=model_set.name, fix=FIX)
    c = model_set.components
    readers = {"transformer": lambda: components.read_dit([c["transformer"]], dtype),
               "text_encoder": lambda: components.read_umt5(c["text_encoder"], dtype),
               "image_encoder": lambda: components.read_clip_vision(c["image_encoder"]),
               "vae": lambda: components.read_vae(c["vae"])}
    parts = {}
    for name, read in readers.items():
        parts[name] = read()
        build.report_loaded([c[name]], name)
    parts["tokenizer"] = build.load_tokenizer(c.get("tokenizer"), str(model_set.root / TOKENIZER))
    return build.assemble_pipeline(parts, build.resolution_of(c["transformer"].name))
