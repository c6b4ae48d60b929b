"""Open Wan's pickled ``.pth`` files safely.

A ``.pth`` is a pickle. It is loaded only with ``torch.load(weights_only=True, mmap=True)`` and
only when its SHA-256 is the published one: recorded in our manifest (preload, verify, adopt), or
in hf download's own record of a ``--local-dir`` download (hf_local.py), or the blob name of a
Hugging Face cache (hf_verify.py). A file is hashed at
most once: the result goes into the manifest with the file's size and mtime. Only the server's
operator can switch the check off (``WAN_VOLUME_TRUST_PTH=1`` in ComfyUI's environment); no
prompt can.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...store import adopt, hashing, hf_local, hf_verify
from ...store import manifest as mf
from ...errors import WanVolumeError
from . import build
from .spec import LoadSpec

log = logging.getLogger(__name__)

_verified: set[tuple[str, int, int]] = set()   # (path, size, mtime) hashed OK in this process
REPORT_EVERY = 256 * 1024 * 1024


class PthRefused(WanVolumeError):
    """A .pth file that is not known to be the published file."""


def operator_trusts_pth(spec: LoadSpec | None = None) -> bool:
    """The server operator switched the hash check off (environment, or the engine's load spec)."""
    return build.env_switch(build.ENV_TRUST_PTH) or (spec is not None and spec.trust_pth)


def _fix(path: Path) -> str:
    return ("fetch it with `python wanvolume.py preload --profile wan21-i2v-720p` (records its "
            "SHA-256) or with `hf download Wan-AI/Wan2.1-I2V-14B-720P --local-dir "
            f"{path.parent}` (records the Hub's hash); the server operator can also start ComfyUI "
            f"with {build.ENV_TRUST_PTH}=1 to skip the check for files they trust")


def check_pth(path: Path, spec: LoadSpec | None = None) -> None:
    """Raise ``PthRefused`` unless ``path`` is the published file (or the operator trusts it).

    ``spec`` carries the operator's switch and the loader's byte progress (hashing counts)."""
    if operator_trusts_pth(spec):
        log.warning("loading %s without a hash check (%s=1)", path, build.ENV_TRUST_PTH)
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    located = mf.locate(path)
    if located is not None and located.entry.vouches_for(path):
        _verified.add(key)      # hashed before and unchanged since: no second read
        return
    cached = hf_verify.published(path)      # a Hugging Face cache names its blobs by SHA-256
    if cached is not None and cached.kind == "sha256" and hf_verify.check_file(path):
        _verified.add(key)
        return
    record = hf_local.find_record(path)
    if located is None and record is None:
        raise PthRefused("a .pth file is a pickle and is loaded only when its SHA-256 is known: "
                         "this file has no manifest entry and no hf download record",
                         field="file", value=str(path), fix=_fix(path))
    hasher = _hash_with_progress(path, record is not None and record.kind == "git-sha1", spec)
    if located is not None and hasher.sha256.hexdigest() == located.entry.sha256 \
            and hasher.size == located.entry.size:
        _remember_mtime(located, path)
    elif record is not None and record.matches(hasher):
        adopt.remember(record, hasher)
    elif record is not None:
        raise PthRefused(record.mismatch(hasher), field="file", value=str(path), fix=_fix(path))
    else:
        e = located.entry
        raise PthRefused(f"the file's SHA-256 differs from the manifest: found "
                         f"{hasher.sha256.hexdigest()} ({hasher.size} bytes), recorded {e.sha256} "
                         f"({e.size} bytes) from {e.repo}@{e.revision[:8]}; it was changed or is "
                         "damaged",
                         field="file", value=str(path), fix=_fix(path))
    _verified.add(key)


def _hash_with_progress(path: Path, git: bool, spec: LoadSpec | None) -> hashing.Hasher:
    """Hash once, reporting bytes to the loader's progress bar and the log (tens of GB)."""
    size = path.stat().st_size
    log.info("hashing %s (%.1f GB) once against its published SHA-256", path, size / 1e9)
    spec = spec or LoadSpec(None)
    spec.grow(size)
    pending = [0]

    def on_bytes(n: int) -> None:
        pending[0] += n
        if pending[0] >= REPORT_EVERY:
            spec.read(pending[0], f"hash {path.name}")
            pending[0] = 0

    hasher = hashing.hash_file(path, on_bytes, git)
    spec.read(pending[0], f"hash {path.name}")
    return hasher


def _remember_mtime(located: mf.Located, path: Path) -> None:
    entry = located.entry
    entry.mtime_ns = mf.mtime_ns(path)
    try:
        mf.record_entries(located.models_dir, located.name, [entry])
    except OSError as exc:
        log.info("could not record the hash check of %s (%s)", path, exc)


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


def load_pth(path: Path, spec: LoadSpec | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a checked ``.pth`` (memory-mapped; copy what you keep)."""
    path = Path(path)
    check_torch()
    check_pth(path, spec)
    data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(data, dict):
        raise PthRefused(f"expected a state dict, found {type(data).__name__}", field="file",
                         value=str(path), fix="use the file published by Wan-AI")
    return data
