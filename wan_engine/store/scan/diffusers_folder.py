"""Scan for diffusers-layout model sets: folders holding ``model_index.json`` (torch-free)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import manifest, stfile
from ..modelset import ModelSet

log = logging.getLogger(__name__)

LAYOUT = "diffusers"
DIFFUSERS_COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer", "image_encoder",
                        "image_processor", "scheduler")


def scan_diffusers(models_dir: Path) -> list[ModelSet]:
    """Diffusers-layout folders (``model_index.json``) directly under ``models_dir``."""
    found = []
    for index in sorted(Path(models_dir).glob("*/model_index.json")):
        root = index.parent
        try:
            declared = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping %s: unreadable model_index.json (%s)", root, exc)
            continue
        if "transformer" not in declared:
            continue  # some other diffusers model, not a Wan pipeline
        # a null entry is a component the pipeline runs without (Wan2.2 has no image encoder)
        wanted = [c for c in DIFFUSERS_COMPONENTS if c in declared and _declared(declared[c])]
        missing = [c for c in wanted if not component_present(root / c)]
        two = " Wan2.2, two experts: transformer = high noise, transformer_2 = low noise" \
            if "transformer_2" in wanted else ""
        found.append(ModelSet(name=root.name, layout=LAYOUT, root=root,
                              components={c: root / c for c in wanted}, missing=missing,
                              label=f"{root.name} (diffusers{two})",
                              **_unfinished(Path(models_dir), root)))
    return found


def _declared(entry: object) -> bool:
    return not (isinstance(entry, list) and entry and entry[0] is None)


def _unfinished(models_dir: Path, root: Path) -> dict[str, str]:
    """A preload writing this folder, or killed in it: what is unfinished and how to resume."""
    state = manifest.unfinished_preload(models_dir, root)
    if state is None:
        return {}
    from ..adopt import manifest_name
    from ..check import set_command
    from ..profiles import PROFILES
    name = state[1] or manifest_name(root)[0]
    if state[1] or name in PROFILES:
        resume = set_command(manifest.load_manifest(models_dir, name), name, models_dir)
    else:
        resume = "the `python wanvolume.py preload ...` command that wrote it, again"
    return {"unfinished": state[0], "resume": resume}


def component_present(folder: Path) -> bool:
    """A component folder with its config and every shard its index lists."""
    if not folder.is_dir():
        return False
    has_config = any(folder.glob("*.json")) or any(folder.glob("*.model"))
    for index in folder.glob("*.index.json"):
        try:
            shards = stfile.shard_files(index)
        except stfile.HeaderError:
            return False
        if not all((folder / s).is_file() for s in shards):
            return False
    return has_config
