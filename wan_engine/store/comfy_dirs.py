"""ComfyUI's own ``models/`` folders, as the CLI sees them without importing ComfyUI.

The nodes search ComfyUI's folder_paths besides the volume (nodes/common.py ``extra_set_dirs``,
``extra_lora_dirs``); ``status`` and ``check`` look at the same standard folders of the ComfyUI
that ``COMFYUI_DIR`` names, else of the tree the pack sits in (``<ComfyUI>/custom_nodes/<pack>``).
Folders added by ``extra_model_paths.yaml`` are seen by the nodes only.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import find as volume
from .modelset import COMFY_KINDS, LoraFile, ModelSet, SearchDirs

PACK = Path(__file__).resolve().parents[2]
# ComfyUI's folder names per kind, its legacy ones included (folder_paths.py: unet, clip)
FOLDERS = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip"),
           "clip_vision": ("clip_vision",), "vae": ("vae",)}


def comfyui_dir(pack: Path = PACK) -> Path | None:
    """The ComfyUI tree: COMFYUI_DIR, else the one whose custom_nodes holds the pack (None: neither)."""
    env = os.environ.get("COMFYUI_DIR", "").strip()
    candidates = [Path(env).expanduser()] if env else []
    if pack.parent.name == "custom_nodes":
        candidates.append(pack.parent.parent)
    return next((c.absolute() for c in candidates if (c / "main.py").is_file()), None)


def search_dirs(comfy: Path) -> SearchDirs:
    models = comfy / "models"
    kinds = {k: [models / f for f in FOLDERS[k]] for k in COMFY_KINDS}
    return SearchDirs.from_kinds([models, models / "diffusers"], kinds)


def model_sets(comfy: Path) -> list[ModelSet]:
    """The sets in ComfyUI's folders (a name seen twice keeps the first complete one)."""
    search = search_dirs(comfy)
    sets: dict[str, ModelSet] = {}
    found = [s for d in search.models_dirs if d.is_dir() for s in volume.scan_dir(d)]
    for s in found + volume.scan_kinds(search):
        if s.name not in sets or (s.complete and not sets[s.name].complete):
            sets[s.name] = s
    return list(sets.values())


def loras(comfy: Path) -> list[LoraFile]:
    folder = comfy / "models" / "loras"
    files = sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []
    return [LoraFile(f"loras/{f.relative_to(folder).as_posix()}", f) for f in files]


def comfyui_status() -> dict:
    """``status``'s ``comfyui`` section: the tree, its complete and partial sets, its LoRAs."""
    comfy = comfyui_dir()
    if comfy is None:
        return {"dir": None, "model_sets": [], "loras": []}
    return {"dir": str(comfy),
            "model_sets": [{"name": s.name, "layout": s.layout, "root": str(s.root), "complete": s.complete,
                            "missing": list(s.missing)} for s in model_sets(comfy)],
            "loras": [{"name": lf.name, "path": str(lf.path), "size_bytes": lf.path.stat().st_size}
                      for lf in loras(comfy)]}


def comfyui_text(doc: dict, yes_no) -> list[str]:
    """``status``'s text for ComfyUI's folders."""
    from .progress import human_bytes, table
    if doc["dir"] is None:
        return ["ComfyUI's models folders: no ComfyUI found (set COMFYUI_DIR to see its models/)"]
    out = [f"ComfyUI's models folders ({doc['dir']}/models), which the loader also searches:"]
    out.append(table(("ComfyUI set", "layout", "complete", "missing"),
                     [(s["name"], s["layout"], yes_no(s["complete"]), ", ".join(s["missing"]))
                      for s in doc["model_sets"]]))
    out.append(table(("ComfyUI LoRA", "size"), [(lf["name"], human_bytes(lf["size_bytes"]))
                                                 for lf in doc["loras"]]))
    return out
