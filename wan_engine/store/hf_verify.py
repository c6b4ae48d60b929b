"""Checking files in a Hugging Face cache against the hash the cache itself names them by.

A snapshot file links to ``blobs/<etag>``: for an LFS file (every weight file) the etag is its
SHA-256, for a small git file the git blob SHA-1. So the published hash is known without the
Hub: the file is hashed once and the result remembered with its size and mtime, as the pack does
for ``.pth`` files. Where the cache was copied with links resolved (plain files), the names of the
repo's blobs of the same size are the candidates. A cache without blobs has nothing to compare
with; the header checks still apply.

Nothing is written into the cache (it may be read-only). The results go to ``state_file()``:
``$WAN_VOLUME_STATE_DIR``, else the primary models dir's ``.wanvolume/`` if writable, else
``~/.cache/wanvolume/``; ``status`` shows which. Torch-free.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import hashing, hf_cache, paths
from . import manifest as mf
from ..errors import WanVolumeError

log = logging.getLogger(__name__)

ENV_STATE_DIR = "WAN_VOLUME_STATE_DIR"
STATE_NAME = "hf-cache-verified.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_lock = threading.Lock()


class HfCacheMismatch(WanVolumeError):
    """A cached file whose content is not the blob it is named by."""


@dataclass(frozen=True)
class Published:
    kind: str                   # "sha256" | "git-sha1"
    digests: tuple[str, ...]    # one for a link; every same-sized blob for a plain file


def state_dir() -> Path:
    """Where the pack's own records of HF caches go (never into a cache)."""
    override = os.environ.get(ENV_STATE_DIR, "").strip()
    if override:
        return Path(override).expanduser()
    models = paths.primary_models_dir()
    if _writable(models):
        return mf.state_dir(models)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "wanvolume"


def _writable(folder: Path) -> bool:
    """An existing, writable folder that is not inside a hub cache."""
    folder = folder.absolute()
    return folder.is_dir() and os.access(folder, os.W_OK) and not any(
        folder == r or r in folder.parents for r in hf_cache.roots())


def state_file() -> Path:
    return state_dir() / STATE_NAME


def published(path: Path) -> Published | None:
    """The hash the cache names ``path``'s content by, or None (not in a cache, no blobs)."""
    path = Path(path)
    snap = hf_cache.cache_of(path)
    if snap is None:
        return None
    if path.is_symlink():
        etag = Path(os.readlink(path)).name
        if _SHA256.match(etag):
            return Published("sha256", (etag,))
        return Published("git-sha1", (etag,)) if _SHA1.match(etag) else None
    try:
        size = path.stat().st_size
        blobs = [b for b in (snap.repo_folder / "blobs").iterdir()
                 if _SHA256.match(b.name) and b.stat().st_size == size]
    except OSError:
        return None
    return Published("sha256", tuple(sorted(b.name for b in blobs))) if blobs else None


def _key(path: Path) -> tuple[str, int, int]:
    real = Path(path).resolve()
    st = real.stat()
    return str(real), st.st_size, st.st_mtime_ns


def _load() -> dict:
    try:
        return json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def remembered(path: Path) -> bool:
    """Hashed before, matched, and unchanged since (same real file, size and mtime)."""
    try:
        real, size, mtime = _key(path)
    except OSError:
        return False
    got = _load().get(real)
    return bool(got) and got.get("size") == size and got.get("mtime_ns") == mtime


def _remember(path: Path, digest: str) -> None:
    real, size, mtime = _key(path)
    with _lock:
        data = _load()
        data[real] = {"size": size, "mtime_ns": mtime, "digest": digest}
        try:
            mf.write_json_atomic(state_file(), data)
        except OSError as exc:   # nowhere to write: hashed again next start
            log.info("could not remember the hash check of %s in %s (%s)", path, state_file(), exc)


def check_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> bool:
    """Hash a cached file once against the blob name; False when the cache names no hash.

    Raises ``HfCacheMismatch`` naming the file, both hashes and the fix."""
    want = published(path)
    if want is None:
        return False
    if remembered(path):
        return True
    log.info("hashing %s once against the hash the Hugging Face cache names it by", path)
    hasher = hashing.hash_file(path, on_bytes, git=want.kind == "git-sha1")
    found = hasher.git.hexdigest() if want.kind == "git-sha1" else hasher.sha256.hexdigest()
    if found not in want.digests:
        snap = hf_cache.cache_of(path)
        what = "SHA-256" if want.kind == "sha256" else "git blob SHA-1"
        raise HfCacheMismatch(
            f"the file's {what} is {found} ({hasher.size} bytes) but the Hugging Face cache names "
            f"it {' or '.join(d[:16] + '...' for d in want.digests)}: the blob was changed, "
            "truncated or damaged", field="file", value=str(path),
            fix=f"delete {Path(path).resolve()} and run `{hf_cache.download_command(snap.repo_id)}` "
                "again (same HF_HOME/HF_HUB_CACHE), or ask RunPod to refresh the endpoint's cached model")
    _remember(path, found)
    return True


def check_files(files: Iterable[Path], on_bytes: Callable[[int], None] | None = None) -> int:
    """``check_file`` for each file in an HF cache; returns how many were compared."""
    return sum(check_file(f, on_bytes) for f in files if hf_cache.cache_of(f) is not None)


def file_state(path: Path) -> str:
    """``verified`` (hashed, unchanged), ``hub-metadata`` (the cache names a hash, not hashed yet)
    or ``unknown``."""
    if published(path) is None:
        return "unknown"
    return "verified" if remembered(path) else "hub-metadata"


def unhashed(files: Iterable[Path]) -> list[Path]:
    """The files of a Hugging Face cache that the cache names a hash for and that were not hashed
    yet: what a load hashes on their first use (the read-ahead's pass, load/readahead.py)."""
    return [f for f in files if hf_cache.cache_of(f) is not None and published(f) is not None
            and not remembered(f)]
