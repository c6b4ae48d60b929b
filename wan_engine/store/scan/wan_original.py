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

from .. import stfile
from ..modelset import ModelSet

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
        try:
            names = stfile.shard_files(folder / INDEX)
        except stfile.HeaderError as exc:
            log.warning("%s", exc)
            return [], [INDEX + " (unreadable)"]
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
