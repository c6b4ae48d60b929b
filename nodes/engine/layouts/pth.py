"""Open Wan's pickled ``.pth`` files safely.

A ``.pth`` is a pickle. It is loaded only with ``torch.load(weights_only=True, mmap=True)`` and
only when its SHA-256 matches the manifest the preload wrote, or when the user trusts the file
explicitly (``WAN_VOLUME_TRUST_PTH=1`` or the load's ``trust_pth``, passed as ``trust``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import manifest
from ..errors import WanVolumeError
from . import build

log = logging.getLogger(__name__)

_verified: set[tuple[str, int, int]] = set()   # (path, size, mtime) hashed OK in this process


class PthRefused(WanVolumeError):
    """A .pth file that is not known to be the published file."""


def check_pth(path: Path, trust: bool = False) -> None:
    """Raise ``PthRefused`` unless ``path`` matches its manifest entry or is trusted."""
    if trust:
        log.warning("loading %s without a hash check (trusted by the user)", path)
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    fix = ("fetch it with `python wanvolume.py preload --profile wan21-i2v-720p` (records its "
           "SHA-256), or trust the file explicitly (loader option trust_pth or "
           f"{build.ENV_TRUST_PTH}=1) if you downloaded it from Wan-AI yourself")
    entry = manifest.find_manifest_entry(path)
    if entry is None:
        raise PthRefused("a .pth file is a pickle and is loaded only when the preload's manifest "
                         "records its SHA-256; this file has no manifest entry",
                         field="file", value=str(path), fix=fix)
    if not manifest.sha256_matches(path):
        raise PthRefused(f"the file's SHA-256 differs from the manifest ({entry.sha256[:12]}... "
                         f"from {entry.repo}@{entry.revision[:8]}); it was changed or is damaged",
                         field="file", value=str(path), fix=fix)
    _verified.add(key)


# weights_only=True was bypassable before torch 2.6 (CVE-2025-32434) and had a memory-corruption
# bug before 2.10 (CVE-2026-24747).
MIN_TORCH = (2, 10)


def check_torch(version: str = torch.__version__) -> None:
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
    if parts < MIN_TORCH:
        raise PthRefused(f"torch {version} is too old to open pickled .pth files safely "
                         "(weights_only bypass CVE-2025-32434 before 2.6, memory corruption "
                         "CVE-2026-24747 before 2.10)", field="torch", value=version,
                         fix="upgrade torch to 2.10 or newer, or use the diffusers or ComfyUI "
                             "layout of the model (safetensors only)")


def load_pth(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a checked ``.pth`` (memory-mapped; copy what you keep)."""
    path = Path(path)
    check_torch()
    check_pth(path, trust)
    data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(data, dict):
        raise PthRefused(f"expected a state dict, found {type(data).__name__}", field="file",
                         value=str(path), fix="use the file published by Wan-AI")
    return data
