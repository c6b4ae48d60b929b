"""The Hugging Face cache layout as a volume: ``models--ORG--NAME/snapshots/<rev>/``.

RunPod Serverless puts the repos an endpoint names in its "Model" field at
``/runpod-volume/huggingface-cache/hub``; ``hf download REPO`` (no ``--local-dir``)
and ``from_pretrained`` write the same layout under ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or
``~/.cache/huggingface/hub``. Each repo folder holds ``refs/<branch>`` (the commit a branch
named when it was fetched), ``snapshots/<commit>/<path>`` (symlinks into ``blobs/``, or plain
files where the cache was copied with links resolved) and ``blobs/<etag>`` (``.incomplete``
while a download runs).

The revision ``refs/main`` names is used; other snapshots only when no ref names one. The
snapshots are scanned with the volume's own scanners, so a diffusers repo, Wan-AI's original
repo and ComfyUI's repackaged files are sets here as they are in a models dir. Nothing is ever
written into a cache (it may be read-only): what the pack remembers goes where it can write
(hf_verify.py). Torch-free.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import profiles
from .modelset import LoraFile, ModelSet
from .scan import comfy_files, diffusers_folder, wan_original

log = logging.getLogger(__name__)

ENV_CACHES = "WAN_VOLUME_HF_CACHE"     # os.pathsep-separated roots instead of the defaults; "off": none
RUNPOD_CACHE = Path("/runpod-volume/huggingface-cache/hub")
REPO_PREFIX = "models--"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Snapshot:
    """One revision of one cached repo."""

    repo_id: str          # "Wan-AI/Wan2.1-I2V-14B-720P"
    repo_folder: Path     # <cache>/models--Wan-AI--Wan2.1-I2V-14B-720P
    revision: str         # the commit (snapshot folder name)
    ref: str | None       # the ref that names it ("main"), None when none does

    @property
    def folder(self) -> Path:
        return self.repo_folder / "snapshots" / self.revision

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[-1]


def candidate_roots() -> list[Path]:
    """Every place a Hugging Face hub cache may be, in search order (existing or not)."""
    override = os.environ.get(ENV_CACHES)
    if override is not None:
        if override.strip().lower() in ("", "0", "off", "no", "false"):
            return []
        return _unique(Path(p).expanduser() for p in override.split(os.pathsep) if p.strip())
    out = [RUNPOD_CACHE]
    if os.environ.get("HF_HUB_CACHE", "").strip():
        out.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME", "").strip():
        out.append(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    out.append((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    return _unique(out)


def roots() -> list[Path]:
    """The candidate caches that exist."""
    return [p for p in candidate_roots() if p.is_dir()]


def _unique(paths) -> list[Path]:
    return list(dict.fromkeys(paths))


def repo_id_of(folder: Path) -> str | None:
    """``models--Org--Name`` -> ``Org/Name``; None for datasets, spaces and other folders."""
    if not folder.name.startswith(REPO_PREFIX):
        return None
    return folder.name[len(REPO_PREFIX):].replace("--", "/", 1)


def snapshots(cache: Path) -> list[Snapshot]:
    """Per cached model repo, the snapshot ``refs/main`` names (any ref's if main has none, else
    every snapshot)."""
    out: list[Snapshot] = []
    for folder in sorted(p for p in Path(cache).glob(f"{REPO_PREFIX}*") if p.is_dir()):
        repo_id = repo_id_of(folder)
        present = sorted(p.name for p in (folder / "snapshots").glob("*") if p.is_dir())
        if repo_id is None or not present:
            continue
        refs = _refs(folder)
        chosen = [("main", refs["main"])] if refs.get("main") in present else \
            [(ref, rev) for ref, rev in sorted(refs.items()) if rev in present]
        chosen = chosen[:1] or [(None, rev) for rev in present]
        out += [Snapshot(repo_id, folder, rev, ref) for ref, rev in chosen]
    return out


def _refs(repo_folder: Path) -> dict[str, str]:
    out = {}
    base = repo_folder / "refs"
    for ref in sorted(base.rglob("*")) if base.is_dir() else []:
        try:
            commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
        except OSError:
            continue
        if _COMMIT.match(commit):
            out[ref.relative_to(base).as_posix()] = commit
    return out


def incomplete_blobs(repo_folder: Path) -> list[Path]:
    """Downloads that did not finish (huggingface_hub writes ``blobs/<etag>.incomplete`` first)."""
    return sorted((Path(repo_folder) / "blobs").glob("*.incomplete"))


def download_command(repo_id: str) -> str:
    """The command that finishes (resumes) a repo's download into the same cache."""
    return f"hf download {repo_id}"


def unfinished_note(snap: Snapshot) -> list[str]:
    """For a set's ``missing`` list: each half-downloaded blob of its repo and the fix. A repo with
    one is not offered even where every file the scanner asks for is there: the download that
    left it did not finish, and which file it was is not known without the Hub."""
    return [f"{blob} (a download that did not finish; run `{download_command(snap.repo_id)}` "
            f"with the same HF_HOME/HF_HUB_CACHE to finish it)" for blob in incomplete_blobs(snap.repo_folder)]


# ---- model sets --------------------------------------------------------------------------

def scan_cache(cache: Path) -> list[ModelSet]:
    """Every set in one hub cache: diffusers and Wan-AI repos, and ComfyUI files across repos."""
    snaps = snapshots(cache)
    several = {s.repo_id for s in snaps if sum(t.repo_id == s.repo_id for t in snaps) > 1}
    sets: list[ModelSet] = []
    for snap in snaps:
        for found in _folder_sets(snap):
            found.name = snap.name + (f"@{snap.revision[:8]}" if snap.repo_id in several else "")
            found.label = f"{found.name} ({found.layout}, Hugging Face cache {snap.repo_id}@{snap.revision[:8]})"
            found.missing = list(found.missing) + unfinished_note(snap)
            sets.append(found)
    for found in comfy_files.scan_folders(comfy_kinds(snaps)):
        snap = next((s for s in snaps if s.folder in found.components["transformer"].parents), None)
        if snap is not None:
            found.missing = list(found.missing) + unfinished_note(snap)
        sets.append(found)
    return sets


def _folder_sets(snap: Snapshot) -> list[ModelSet]:
    """The diffusers or Wan-AI set a snapshot is (the scanners look one folder down)."""
    parent = snap.folder.parent
    found = []
    if (snap.folder / "model_index.json").is_file():
        found = diffusers_folder.scan_diffusers(parent)
    elif (snap.folder / "config.json").is_file():
        found = wan_original.scan_wan(parent)
    return [s for s in found if s.root == snap.folder]


def comfy_kinds(snaps: list[Snapshot]) -> dict[str, list[Path]]:
    """ComfyUI's kind folders inside snapshots: ``<kind>/`` and Comfy-Org's ``split_files/<kind>/``."""
    kinds: dict[str, list[Path]] = {k: [] for k in comfy_files.SUBDIRS}
    for snap in snaps:
        for kind, subs in comfy_files.SUBDIRS.items():
            for sub in subs:
                kinds[kind] += [d for d in (snap.folder / sub, snap.folder / "split_files" / sub) if d.is_dir()]
    return kinds


# ---- LoRAs -------------------------------------------------------------------------------

def scan_loras(cache: Path, set_roots: set[Path], looks_like_lora) -> list[LoraFile]:
    """LoRA files in snapshots that are no model set, named as the profile that fetches the same
    file names them (``kissing-lora/...``), else ``<org>/<name>/<path>``."""
    found = []
    comfy_dirs = {d for ds in comfy_kinds(snapshots(cache)).values() for d in ds}
    for snap in snapshots(cache):
        if snap.folder in set_roots:
            continue
        for f in sorted(snap.folder.rglob("*.safetensors")):
            if any(d in f.parents for d in comfy_dirs) or not looks_like_lora(f):
                continue
            found.append(LoraFile(lora_name(snap.repo_id, f.relative_to(snap.folder).as_posix()), f))
    return found


def lora_name(repo_id: str, repo_path: str) -> str:
    for profile in profiles.PROFILES.values():
        for src in profile.sources:
            if profile.kind == "lora" and src.repo == repo_id and src.wants(repo_path):
                return src.destination(repo_path)
    return f"{repo_id}/{repo_path}"


def cache_of(path: Path) -> Snapshot | None:
    """The snapshot ``path`` lies in (by its folders, without resolving links), or None."""
    path = Path(path).absolute()
    for parent in path.parents:
        if parent.parent.name == "snapshots" and parent.parent.parent.name.startswith(REPO_PREFIX):
            repo_folder = parent.parent.parent
            return Snapshot(repo_id_of(repo_folder) or "", repo_folder, parent.name, None)
    return None
