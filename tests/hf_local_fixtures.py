"""Folders as `hf download REPO --local-dir D` leaves them, for the tiny model.

The files are written first, then each file's record with huggingface_hub's own
``write_download_metadata`` (as its download does, after moving the file into place): commit,
etag (SHA-256 for LFS files, git blob SHA-1 for small git files), timestamp.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub._local_folder import write_download_metadata

COMMIT = "6b4d1d1b4a0c2c0f1e7d3a9b8c5e2f1a0d9c8b7a"
# What the Hub keeps in LFS for these repos (their .gitattributes): weights and big tokenizer files.
LFS_SUFFIXES = (".pth", ".safetensors", ".bin", ".model", ".pt")
LFS_NAMES = ("tokenizer.json",)


def is_lfs(relpath: str) -> bool:
    return relpath.endswith(LFS_SUFFIXES) or relpath.rsplit("/", 1)[-1] in LFS_NAMES


def etag_of(path: Path, relpath: str) -> str:
    data = path.read_bytes()
    if is_lfs(relpath):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def files_of(local_dir: Path) -> list[str]:
    """Every file of the download (relative, '/'-separated), outside hf download's .cache."""
    return sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*")
                  if p.is_file() and ".cache" not in p.relative_to(local_dir).parts)


def record_download(local_dir: Path, commit: str = COMMIT) -> list[str]:
    """Write hf download's record for every file now in ``local_dir``; returns the files."""
    files = files_of(local_dir)
    for rel in files:
        write_download_metadata(local_dir, rel, commit, etag_of(local_dir / rel, rel))
    return files


def add_repo_extras(local_dir: Path) -> None:
    """The small files every Hub repo has besides the weights."""
    (local_dir / ".gitattributes").write_text("*.pth filter=lfs diff=lfs merge=lfs -text\n")
    (local_dir / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")


def write_hf_wan(local_dir: Path, components: dict) -> Path:
    """Wan-AI/Wan2.1-I2V-14B-720P as `hf download` writes it, in the tiny model."""
    import layout_writers as lw
    lw.write_wan(local_dir, components)
    add_repo_extras(local_dir)
    record_download(local_dir)
    return local_dir


def write_hf_lora(local_dir: Path, lora_file: Path, name: str = "kissing_30_epochs.safetensors") -> Path:
    """Remade-AI/kissing as `hf download Remade-AI/kissing --local-dir ...` leaves it."""
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / name).write_bytes(Path(lora_file).read_bytes())
    add_repo_extras(local_dir)
    record_download(local_dir)
    return local_dir


def flip_byte(path: Path, offset: int) -> None:
    """Change one byte in place (same size; the mtime moves on, as with any write)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(keep)


def age(path: Path, seconds: float = 3600) -> None:
    """Set a file's mtime back (the record stays newer), as a copy with preserved times would."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
