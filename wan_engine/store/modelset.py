"""The records scanning produces: a model set, a LoRA file, and where to search (a leaf module).

Layouts create ``ModelSet``s, ``volume`` indexes them, ``assemble`` loads them; all import this
module and it imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from . import stfile

# ComfyUI's folder kinds (``folder_paths`` names) a ComfyUI-files set is assembled from.
COMFY_KINDS = ("diffusion_models", "text_encoders", "clip_vision", "vae")


@dataclass
class ModelSet:
    """One loadable Wan2.1 I2V model set."""

    name: str                      # dropdown value; unique on the volume
    layout: str                    # "diffusers" | "wan" | "comfy"
    root: Path                     # folder the set lives in
    components: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    label: str = ""                # readable description
    # ComfyUI files: per component, every file that fits, by its name below its kind's folder
    # (as ComfyUI lists it), the chosen one first; the loader's explicit choices pick from these
    alternatives: dict[str, dict[str, Path]] = field(default_factory=dict)
    # A preload still writing the set, or killed: what is unfinished and the command that resumes
    # it ("" when none). Such a set is never complete, whatever files it already has.
    unfinished: str = ""
    resume: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unfinished

    @property
    def two_experts(self) -> bool:
        """A Wan2.2 A14B set: ``transformer`` is the high-noise expert, ``transformer_2`` the low."""
        return "transformer_2" in self.components

    @property
    def family(self) -> str:
        return "Wan2.2" if self.two_experts else "Wan2.1"

    def expert_bytes(self) -> dict[str, int]:
        """Bytes on the volume of each DiT (one for Wan2.1, both experts for Wan2.2)."""
        return {comp: sum(f.stat().st_size for f in self.component_files(comp) if f.is_file())
                for comp in ("transformer", "transformer_2") if comp in self.components}

    def component_files(self, name: str) -> list[Path]:
        """One component's files: the file itself or every file of its folder, and the shards
        its ``*.safetensors.index.json`` lists (a missing shard included, so checks can name it)."""
        out = files_under(self.components[name])
        for f in list(out):
            if f.name.endswith(".safetensors.index.json"):
                try:
                    out += stfile.weight_files(f)
                except stfile.HeaderError:
                    pass   # the index's own check reports it
        return list(dict.fromkeys(out))

    def files(self) -> list[Path]:
        """Every file of the set on the volume (``component_files`` of each component)."""
        return list(dict.fromkeys(f for name in self.components for f in self.component_files(name)))

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files() if f.is_file())


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


@dataclass(frozen=True)
class SearchDirs:
    """Where to look besides the volume's models dirs.

    ``models_dirs``: folders searched like a models dir (every layout). ``by_kind``: ComfyUI's
    folder lists per kind (``diffusion_models``, ``text_encoders``, ``clip_vision``, ``vae``;
    e.g. from ``extra_model_paths.yaml``): a DiT in one folder pairs with a VAE in another.
    Plain tuples of ``Path`` so the engine needs no ComfyUI import and the value can key a cache.
    """

    models_dirs: tuple[Path, ...] = ()
    by_kind: tuple[tuple[str, tuple[Path, ...]], ...] = ()

    @classmethod
    def of(cls, extra: "Iterable[Path] | SearchDirs | None") -> "SearchDirs":
        if isinstance(extra, SearchDirs):
            return extra
        return cls(models_dirs=tuple(Path(p) for p in (extra or ())))

    @classmethod
    def from_kinds(cls, models_dirs: Iterable[Path],
                   kinds: Mapping[str, Iterable[Path]]) -> "SearchDirs":
        return cls(tuple(Path(p) for p in models_dirs),
                   tuple((k, tuple(Path(p) for p in kinds.get(k, ()))) for k in COMFY_KINDS
                         if kinds.get(k)))

    def kinds(self) -> dict[str, list[Path]]:
        return {k: list(v) for k, v in self.by_kind}

    def __iter__(self):
        """Iterating gives the models dirs (callers that treat this as a list of dirs)."""
        return iter(self.models_dirs)
