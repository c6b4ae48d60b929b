"""Find model sets and LoRAs on the volume, through one cached index.

A *model set* is everything one Wan2.1 I2V pipeline needs. Each layout in ``scan.SCANS``
scans one models dir and returns the sets it recognises, complete or not, so the UI can say
what is missing; the dropdown shows complete sets.

The dropdowns, validation, execution and the status route all ask here, several times per
prompt. A scan opens safetensors headers, so results are kept per searched folder and reused
while the folder's fingerprint (a stat walk: mtime, size and inode of every folder and file
below it) is unchanged; a new, replaced or removed file changes it and the folder is scanned
again.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Callable, Iterable

from . import auto_set, hf_cache, paths, profiles, stfile
from ..errors import ModelSetNotFound
from .scan import SCANS, comfy_files
from .modelset import LoraFile, ModelSet, SearchDirs, files_under

__all__ = ["ModelSet", "LoraFile", "SearchDirs", "files_under", "find_model_sets", "find_loras",
           "get_model_set", "get_lora", "complete_set_names", "scan_dir"]

log = logging.getLogger(__name__)

# Folders on the volume that hold components, never LoRA repos.
COMPONENT_FOLDERS = {"diffusion_models", "unet", "text_encoders", "clip", "clip_vision", "vae",
                     "diffusers", "checkpoints", "tokenizers", ".locks", ".cache", ".wanvolume"}

# ---- the cached index --------------------------------------------------------------------

_cache: dict[tuple, tuple[tuple, object]] = {}
# State files a scan reads (scan/diffusers_folder.py): a preload's manifests and ready markers.
STATE_WATCHED = (".wanvolume/manifests", ".wanvolume/ready")
_lock = threading.Lock()


def fingerprint(dirs: Iterable[Path]) -> tuple:
    """(path, mtime_ns, size, inode) of every folder and file below ``dirs``; no file is opened.

    Hidden folders (``.cache``, ``.wanvolume``, ...) hold no model files and are skipped, except
    the preload's manifests and ready markers: a set turns complete when its marker is written.
    Links are followed, each folder once (by device and inode): a link loop such as
    ``models/models -> .`` is walked once, not 40 levels deep.
    """
    out: list[tuple] = []
    seen: set[tuple[int, int]] = set()

    def walk(d: str) -> None:
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            out.append((d, None))
            return
        out.append((d, st.st_mtime_ns, st.st_size, st.st_ino))
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                s = e.stat(follow_symlinks=True)
            except OSError:           # a dangling link, a loop: no model file there
                continue
            if stat.S_ISDIR(s.st_mode):
                walk(e.path)
            else:
                out.append((e.path, s.st_mtime_ns, s.st_size, s.st_ino, stat.S_IFMT(s.st_mode)))

    for d in dirs:
        walk(str(d))
        for sub in STATE_WATCHED:
            _stat_files(Path(d) / sub, out)
    return tuple(out)


def _stat_files(folder: Path, out: list[tuple]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            s = e.stat(follow_symlinks=False)
        except OSError:
            continue
        out.append((e.path, s.st_mtime_ns, s.st_size, s.st_ino))


def _cached(key: tuple, dirs: Iterable[Path], compute: Callable[[], object]):
    """``compute()``'s result for ``key``, recomputed only when ``dirs``' fingerprint changed."""
    fp = fingerprint(dirs)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
    value = compute()
    with _lock:
        _cache[key] = (fp, value)
    log.info("WanVolume index: scanned %s", key[1])
    return value


def clear_index() -> None:
    with _lock:
        _cache.clear()


# ---- model sets --------------------------------------------------------------------------

def scan_dir(models_dir: Path) -> list[ModelSet]:
    """Every layout's sets in one models dir (complete or not), from the index."""
    models_dir = Path(models_dir)
    return list(_cached(("dir", str(models_dir)), [models_dir],
                        lambda: [s for layout in SCANS for s in layout.scan(models_dir)]))


def scan_kinds(search: SearchDirs) -> list[ModelSet]:
    """ComfyUI-files sets assembled across per-kind folder lists (extra_model_paths)."""
    if not search.by_kind:
        return []
    kinds = search.kinds()
    watched = [p for folders in kinds.values() for p in folders]
    watched += [Path(p).parent / comfy_files.TOKENIZER for p in kinds.get("text_encoders", ())]
    return list(_cached(("kinds", search.by_kind), watched, lambda: comfy_files.scan_folders(kinds)))


def scan_hf_caches() -> list[ModelSet]:
    """The sets in the Hugging Face caches (hf_cache.py), from the index."""
    return [s for root in hf_cache.roots()
            for s in _cached(("hf", str(root)), [root], lambda root=root: hf_cache.scan_cache(root))]



def volume_and_cache_sets(models_dir: Path) -> list[ModelSet]:
    """The sets of one models dir (none when it does not exist) and of the Hugging Face caches:
    what ``status`` and ``check`` weigh the auto choices against."""
    return (scan_dir(models_dir) if Path(models_dir).is_dir() else []) + scan_hf_caches()


def find_model_sets(extra_dirs: "Iterable[Path] | SearchDirs" = ()) -> list[ModelSet]:
    """All model sets in the volume's models dirs and ``extra_dirs``.

    A name seen twice keeps the first complete set (else the first): a ComfyUI DiT whose VAE is
    only in an extra folder is complete in the per-kind scan, incomplete in its own dir's scan.
    """
    search = SearchDirs.of(extra_dirs)
    sets: dict[str, ModelSet] = {}
    found = ([s for d in _dirs(search.models_dirs) for s in scan_dir(d)] + scan_kinds(search)
             + scan_hf_caches())
    for s in found:
        if s.name not in sets or (s.complete and not sets[s.name].complete):
            sets[s.name] = s
    return list(sets.values())


def complete_set_names(extra_dirs: "Iterable[Path] | SearchDirs" = ()) -> list[str]:
    return [s.name for s in find_model_sets(extra_dirs) if s.complete]


def get_model_set(name: str, extra_dirs: "Iterable[Path] | SearchDirs" = ()) -> ModelSet:
    """The complete set called ``name``, or an error that says what is there and how to fix it.
    An auto value (``auto: Wan2.1 I2V 720P``) gives the set its rule picks (auto_set.py)."""
    search = SearchDirs.of(extra_dirs)
    if auto_set.is_auto(name):
        found = auto_set.resolve(name, find_model_sets(search), paths.primary_models_dir())
        auto_set.log_choice(name, found)
        return found
    sets = {s.name: s for s in find_model_sets(search)}
    found = sets.get(name)
    if found is not None and found.complete:
        return found
    if found is not None and found.unfinished:
        raise ModelSetNotFound(
            f"model set in {found.root} is not ready: {found.unfinished}", field="model_set",
            value=name, fix=f"resume it with `{found.resume}` (finished files are kept), wait "
                            "for the preload writing it to finish, or pick another set")
    if found is not None:
        raise ModelSetNotFound(
            f"model set in {found.root} is incomplete; missing: {', '.join(found.missing)}",
            field="model_set", value=name,
            fix="finish the download with `python wanvolume.py preload ...` (see README, "
                "'Filling the volume') or pick another set")
    searched = _dirs(search.models_dirs) + [p for _, ps in search.by_kind for p in ps]
    raise ModelSetNotFound(
        f"no such model set. Searched: {describe_search(searched)}. Complete sets found: "
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
    shown += [f"{p} (Hugging Face cache, {'found' if p.is_dir() else 'absent'})"
              for p in hf_cache.candidate_roots()]
    return ", ".join(shown)


# ---- LoRAs -------------------------------------------------------------------------------

def find_loras(extra_dirs: Iterable[Path] = ()) -> list[LoraFile]:
    """``*.safetensors`` under ``<models>/loras/``, LoRA repo folders, and ``extra_dirs``.

    A LoRA repo folder is a top-level folder of the models dir that is not a model set nor a
    component folder and holds safetensors files whose keys look like LoRA weights.
    """
    dirs = paths.models_dirs()
    extras = [Path(d) for d in extra_dirs]
    caches = hf_cache.roots()
    key = ("loras", tuple(map(str, dirs)), tuple(map(str, extras)), tuple(map(str, caches)))
    return list(_cached(key, dirs + extras + caches, lambda: _scan_loras(dirs, extras, caches)))


def _scan_loras(dirs: list[Path], extras: list[Path], caches: list[Path] = ()) -> list[LoraFile]:
    found: dict[str, LoraFile] = {}
    set_roots = {s.root for d in dirs for s in scan_dir(d)}
    for d in dirs:
        for f in _lora_files(d / paths.LORA_SUBDIR):
            found.setdefault(f"{paths.LORA_SUBDIR}/{f.relative_to(d / paths.LORA_SUBDIR).as_posix()}",
                             LoraFile("", f))
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            if sub.name in COMPONENT_FOLDERS or sub.name == paths.LORA_SUBDIR or sub in set_roots \
                    or _same_dir(sub, d):
                continue
            for f in _lora_files(sub):
                if looks_like_lora(f):
                    found.setdefault(f.relative_to(d).as_posix(), LoraFile("", f))
    for d in extras:
        if d.is_dir():
            for f in _lora_files(d):
                found.setdefault(f"{paths.LORA_SUBDIR}/{f.relative_to(d).as_posix()}", LoraFile("", f))
    hf_sets = {s.root for s in scan_hf_caches()}
    for c in caches:
        for lf in hf_cache.scan_loras(c, hf_sets, looks_like_lora):
            found.setdefault(lf.name, lf)
    for name, lf in found.items():
        lf.name = name
    return list(found.values())


def _lora_files(folder: Path) -> list[Path]:
    """``*.safetensors`` regular files below ``folder``: a FIFO, socket or dangling link named
    like one is never listed, so no header read can block on it or fail on it."""
    return [f for f in sorted(folder.rglob("*.safetensors")) if f.is_file()]


def _same_dir(a: Path, b: Path) -> bool:
    """``a`` is ``b`` through a link (``models/models -> .``): its files are listed once, under b."""
    try:
        return a.samefile(b)
    except OSError:
        return False


def get_lora(name: str, extra_dirs: Iterable[Path] = ()) -> LoraFile:
    loras = {lf.name: lf for lf in find_loras(extra_dirs)}
    if name in loras:
        return loras[name]
    raise ModelSetNotFound(
        f"no such LoRA file. Found: {', '.join(loras) or 'none'}",
        field="lora", value=name,
        fix=_lora_fix(name))


def _lora_fix(name: str) -> str:
    """The command that fetches exactly this LoRA, or the folder to put it in."""
    hint = profiles.fetch_hint(name, paths.primary_models_dir(), kind="lora")
    return f"`{hint}`" if hint.startswith("python ") else hint


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a safetensors header, reading only the header (stfile)."""
    return list(stfile.read_header(path).tensors)


def looks_like_lora(path: Path) -> bool:
    try:
        keys = safetensors_keys(path)
    except (OSError, ValueError):
        return False
    return any(("lora" in k) or k.endswith(".alpha") for k in keys[:200])


def _dirs(extra_dirs: Iterable[Path]) -> list[Path]:
    out = paths.models_dirs()
    for d in extra_dirs:
        d = Path(d)
        if d.is_dir() and d not in out:
            out.append(d)
    return out
