"""Find model sets and LoRAs on the volume.

A *model set* is everything one Wan2.1 I2V pipeline needs. Each layout has a scanner
(``SCANNERS``); a scanner looks at one models dir and returns the sets it recognises,
complete or not, so the UI can say what is missing. The dropdown shows complete sets.
"""
from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import paths
from .errors import ModelSetNotFound

log = logging.getLogger(__name__)

DIFFUSERS_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder",
                        "image_processor", "scheduler")
# Folders on the volume that hold components, never LoRA repos.
COMPONENT_FOLDERS = {"diffusion_models", "unet", "text_encoders", "clip", "clip_vision", "vae",
                     "diffusers", "checkpoints", "tokenizers", ".locks", ".cache", ".wanvolume"}


@dataclass
class ModelSet:
    """One loadable Wan2.1 I2V model set."""

    name: str                      # dropdown value; unique on the volume
    layout: str                    # "diffusers" | "wan" | "comfy"
    root: Path                     # folder the set lives in
    components: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    label: str = ""                # readable description

    @property
    def complete(self) -> bool:
        return not self.missing

    def files(self) -> list[Path]:
        """Every file of the set on the volume (component files and files in component folders)."""
        return [f for p in self.components.values() for f in files_under(p)]

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files())


def files_under(path: Path) -> list[Path]:
    """``path`` itself if it is a file, every file below it if it is a folder, else nothing."""
    if path.is_file():
        return [path]
    return [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []


@dataclass
class LoraFile:
    """A LoRA file that can be applied; ``name`` is the dropdown value."""

    name: str
    path: Path


def scan_diffusers(models_dir: Path) -> list[ModelSet]:
    """Diffusers-layout folders (``model_index.json``) directly under ``models_dir``."""
    found = []
    for index in sorted(models_dir.glob("*/model_index.json")):
        root = index.parent
        try:
            declared = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping %s: unreadable model_index.json (%s)", root, exc)
            continue
        if "transformer" not in declared:
            continue  # some other diffusers model, not a Wan pipeline
        wanted = [c for c in DIFFUSERS_COMPONENTS if c in declared]
        missing = [c for c in wanted if not _component_present(root / c)]
        found.append(ModelSet(name=root.name, layout="diffusers", root=root,
                              components={c: root / c for c in wanted}, missing=missing,
                              label=f"{root.name} (diffusers)"))
    return found


def _component_present(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    has_config = any(folder.glob("*.json")) or any(folder.glob("*.model"))
    index_files = list(folder.glob("*.index.json"))
    for index in index_files:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, json.JSONDecodeError, KeyError):
            return False
        if not all((folder / s).is_file() for s in shards):
            return False
    return has_config


# Scanners for other layouts register here (see layouts/).
SCANNERS: list[Callable[[Path], list[ModelSet]]] = [scan_diffusers]


def find_model_sets(extra_dirs: Iterable[Path] = ()) -> list[ModelSet]:
    """All model sets in the volume's models dirs and ``extra_dirs``, first name wins."""
    sets: dict[str, ModelSet] = {}
    for d in _dirs(extra_dirs):
        for scan in SCANNERS:
            for s in scan(d):
                sets.setdefault(s.name, s)
    return list(sets.values())


def complete_set_names(extra_dirs: Iterable[Path] = ()) -> list[str]:
    return [s.name for s in find_model_sets(extra_dirs) if s.complete]


def get_model_set(name: str, extra_dirs: Iterable[Path] = ()) -> ModelSet:
    """The complete set called ``name``, or an error that says what is there and how to fix it."""
    dirs = _dirs(extra_dirs)
    sets = {s.name: s for s in find_model_sets(extra_dirs)}
    found = sets.get(name)
    if found is not None and found.complete:
        return found
    if found is not None:
        raise ModelSetNotFound(
            f"model set in {found.root} is incomplete; missing: {', '.join(found.missing)}",
            field="model_set", value=name,
            fix="finish the download with `python wanvolume.py preload ...` (see README, "
                "'Filling the volume') or pick another set")
    raise ModelSetNotFound(
        f"no such model set. Searched: {describe_search(dirs)}. Complete sets found: "
        f"{', '.join(n for n, s in sets.items() if s.complete) or 'none'}. A model set is a folder "
        "such as <models>/Wan2.1-I2V-14B-720P-Diffusers holding model_index.json, transformer/, "
        "vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/ and scheduler/",
        field="model_set", value=name,
        fix="pre-load one with `python wanvolume.py preload --profile wan21-i2v-720p-diffusers`, "
            "or set WAN_VOLUME_MODELS_DIR to the folder that holds your model sets")


def describe_search(dirs: list[Path]) -> str:
    cands = paths.candidate_models_dirs()
    shown = [f"{p} ({'found' if p.is_dir() else 'absent'})" for p in cands]
    shown += [str(p) for p in dirs if p not in cands]
    return ", ".join(shown)


def find_loras(extra_dirs: Iterable[Path] = ()) -> list[LoraFile]:
    """``*.safetensors`` under ``<models>/loras/``, LoRA repo folders, and ``extra_dirs``.

    A LoRA repo folder is a top-level folder of the models dir that is not a model set nor a
    component folder and holds safetensors files whose keys look like LoRA weights.
    """
    found: dict[str, LoraFile] = {}
    set_roots = {s.root for d in paths.models_dirs() for scan in SCANNERS for s in scan(d)}
    for d in paths.models_dirs():
        for f in sorted((d / paths.LORA_SUBDIR).rglob("*.safetensors")):
            found.setdefault(f"{paths.LORA_SUBDIR}/{f.relative_to(d / paths.LORA_SUBDIR).as_posix()}",
                             LoraFile("", f))
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            if sub.name in COMPONENT_FOLDERS or sub.name == paths.LORA_SUBDIR or sub in set_roots:
                continue
            for f in sorted(sub.rglob("*.safetensors")):
                if looks_like_lora(f):
                    found.setdefault(f.relative_to(d).as_posix(), LoraFile("", f))
    for d in extra_dirs:
        d = Path(d)
        if d.is_dir():
            for f in sorted(d.rglob("*.safetensors")):
                found.setdefault(f"{paths.LORA_SUBDIR}/{f.relative_to(d).as_posix()}", LoraFile("", f))
    for name, lf in found.items():
        lf.name = name
    return list(found.values())


def get_lora(name: str, extra_dirs: Iterable[Path] = ()) -> LoraFile:
    loras = {lf.name: lf for lf in find_loras(extra_dirs)}
    if name in loras:
        return loras[name]
    raise ModelSetNotFound(
        f"no such LoRA file. Found: {', '.join(loras) or 'none'}",
        field="lora", value=name,
        fix="put the .safetensors file in <models>/loras/ or pre-load it with "
            "`python wanvolume.py preload --profile kissing-lora`")


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a safetensors header, reading only the header."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: header of {length} bytes is not a safetensors header")
        header = json.loads(fh.read(length))
    return [k for k in header if k != "__metadata__"]


def looks_like_lora(path: Path) -> bool:
    try:
        keys = safetensors_keys(path)
    except (OSError, ValueError, struct.error):
        return False
    return any(("lora" in k) or k.endswith(".alpha") for k in keys[:200])


def _dirs(extra_dirs: Iterable[Path]) -> list[Path]:
    out = paths.models_dirs()
    for d in extra_dirs:
        d = Path(d)
        if d.is_dir() and d not in out:
            out.append(d)
    return out


from .layouts import register_scanners as _register_scanners  # noqa: E402  (wan, comfy layouts)
_register_scanners()
