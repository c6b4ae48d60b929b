"""The original Wan-AI layout (what the setup guide downloads): ``<models>/Wan2.1-I2V-14B-720P/``.

``config.json`` (``WanModel``, ``model_type`` i2v), the DiT as safetensors shards + index,
``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth`` and
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (Wan's own key names, mapped in
keymaps/), and the ``google/umt5-xxl`` tokenizer folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..volume import ModelSet

log = logging.getLogger(__name__)

LAYOUT = "wan"
INDEX = "diffusion_pytorch_model.safetensors.index.json"
SINGLE = "diffusion_pytorch_model.safetensors"
FILES = {"vae": "Wan2.1_VAE.pth", "text_encoder": "models_t5_umt5-xxl-enc-bf16.pth",
         "image_encoder": "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
         "tokenizer": "google/umt5-xxl"}


def read_config(folder: Path) -> dict | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if cfg.get("_class_name") != "WanModel" or cfg.get("model_type") != "i2v":
        return None
    return cfg


def dit_shards(folder: Path) -> tuple[list[Path], list[str]]:
    """The DiT's shard files and the names of those absent."""
    if (folder / INDEX).is_file():
        names = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
        return [folder / n for n in names], [n for n in names if not (folder / n).is_file()]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE], []
    return [], [INDEX + " + shards"]


def scan_wan(models_dir: Path) -> list[ModelSet]:
    """Folders directly under ``models_dir`` holding an original Wan I2V model."""
    sets = []
    for cfg_path in sorted(Path(models_dir).glob("*/config.json")):
        root = cfg_path.parent
        if read_config(root) is None:
            continue
        shards, missing = dit_shards(root)
        comps = {"transformer": root / INDEX if (root / INDEX).is_file() else root / SINGLE}
        for comp, rel in FILES.items():
            comps[comp] = root / rel
            if not comps[comp].exists():
                missing.append(rel)
        label = f"{root.name} (original Wan layout)"
        sets.append(ModelSet(name=root.name, layout=LAYOUT, root=root, components=comps,
                             missing=missing,
                             label=label + (f" missing {', '.join(missing)}" if missing else "")))
    return sets


def build_wan(model_set: ModelSet, dtype):
    """Assemble the pipeline; the .pth files are opened only after their hash check."""
    from . import build, components, wan_pth

    if model_set.missing:
        raise build.WanVolumeError(
            f"original Wan model set is missing {', '.join(model_set.missing)}", field="model_set",
            value=model_set.name, fix="finish it with `python wanvolume.py preload --profile "
                                      "wan21-i2v-720p`")
    root = model_set.root
    cfg = read_config(root) or {}
    shards, _ = dit_shards(root)
    c = model_set.components
    parts = {"transformer": components.read_dit(shards, dtype, num_heads=cfg.get("num_heads"))}
    build.report_loaded(shards, "transformer")
    readers = {"text_encoder": lambda: wan_pth.read_t5(c["text_encoder"], dtype),
               "image_encoder": lambda: wan_pth.read_clip(c["image_encoder"]),
               "vae": lambda: wan_pth.read_vae(c["vae"])}
    for name, read in readers.items():
        parts[name] = read()
        build.report_loaded([c[name]], name)
    parts["tokenizer"] = build.load_tokenizer(c["tokenizer"], str(c["tokenizer"]))
    return build.assemble_pipeline(parts, build.resolution_of(root.name))
