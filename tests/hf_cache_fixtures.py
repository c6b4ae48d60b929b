"""Hugging Face caches written by huggingface_hub itself, from a loopback fake Hub (fake_hub.py).

``download`` runs huggingface_hub's own ``snapshot_download`` into a cache dir: ``refs/main``,
``snapshots/<commit>/`` symlinks into ``blobs/<etag>``, exactly what ``hf download``
and RunPod's cached models leave. ``resolved_copy`` is the same cache copied with the links
resolved (plain files), ``tree`` lists every entry with its mtime to prove nothing was written.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from fake_hub import FakeHub

DIFFUSERS_REPO = "Wan-AI/Wan2.1-I2V-tiny-Diffusers"
COMFY_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
LORA_REPO = "Remade-AI/kissing"
LORA_FILE = "kissing_30_epochs.safetensors"


def files_of(folder: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file below ``folder`` as a repo's files (``prefix`` + its relative path)."""
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def comfy_repo_files(models_dir: Path) -> dict[str, bytes]:
    """ComfyUI's folders as Comfy-Org publishes them: ``split_files/<kind>/<file>``."""
    out = {}
    for kind in ("diffusion_models", "text_encoders", "clip_vision", "vae"):
        out.update(files_of(models_dir / kind, f"split_files/{kind}/"))
    return out


def download(hub: FakeHub, repo_id: str, cache: Path) -> Path:
    """huggingface_hub's own snapshot_download into ``cache``; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, cache_dir=str(cache), endpoint=hub.endpoint))


def resolved_copy(cache: Path, dest: Path) -> Path:
    """The cache with every link replaced by the file it points to (RunPod may copy it so)."""
    shutil.copytree(cache, dest, symlinks=False)
    return dest


def tree(folder: Path) -> dict[str, tuple]:
    """Every entry below ``folder`` (links not followed): kind, size, mtime, link target."""
    out = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(base) / name
            st = p.lstat()
            out[p.relative_to(folder).as_posix()] = (
                stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns,
                os.readlink(p) if p.is_symlink() else None)
    return out


def read_only(folder: Path) -> None:
    """chmod a-w on everything below ``folder`` (links themselves have no mode)."""
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(base) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode & ~0o222)
    Path(folder).chmod(Path(folder).stat().st_mode & ~0o222)


def writable(folder: Path) -> None:
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(base) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
    Path(folder).chmod(Path(folder).stat().st_mode | 0o200)


def blob_of(path: Path) -> Path:
    """The blob a snapshot link points to."""
    return Path(path).resolve()


def flip_byte(path: Path, offset_from_end: int = 5) -> None:
    """Change one data byte near the end (the header still reads); same size."""
    with open(path, "r+b") as fh:
        fh.seek(-offset_from_end, os.SEEK_END)
        b = fh.read(1)
        fh.seek(-offset_from_end, os.SEEK_END)
        fh.write(bytes([b[0] ^ 0xFF]))
