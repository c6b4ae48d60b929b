"""Whole-file checks from safetensors headers alone: is a file damaged, does a DiT hold a Wan DiT.

Headers are read once per version of a file (path, size, mtime): the dropdowns, /prompt and the
status route ask often, and a volume may be a network mount.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import stfile
from ..errors import InvalidInput

_headers: dict[tuple, tuple[str | None, frozenset]] = {}   # (path, size, mtime) -> (problem, names)
WAN_DIT_FIX = "put a Wan2.1 I2V DiT there (Wan-AI or Comfy-Org/Wan_2.1_ComfyUI_repackaged)"


def header_facts(path: Path) -> tuple[str | None, frozenset]:
    """The header's problem (``stfile.truncation_problem``) and tensor names, read once per version
    of the file: the dropdowns, /prompt and the status route ask often, and a volume may be a
    network mount."""
    try:
        st = Path(path).stat()
    except OSError as exc:
        return f"unreadable ({exc.strerror})", frozenset()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _headers:
        if len(_headers) > 10_000:
            _headers.clear()
        problem = stfile.truncation_problem(path)
        names = frozenset() if problem else frozenset(stfile.read_header(path).tensors)
        _headers[key] = (problem, names)
    return _headers[key]


def damaged_file(files: Iterable[Path]) -> tuple[Path, str] | None:
    """The first ``*.safetensors`` file whose header is unreadable or does not fit its size, and why."""
    for f in files:
        if Path(f).suffix == ".safetensors":
            problem = header_facts(f)[0]
            if problem:
                return Path(f), problem
    return None


def safetensors_files(field: str, value: object, files: Iterable[Path], fix: str) -> None:
    """Every ``*.safetensors`` file has a readable header that fits its size (headers only)."""
    bad = damaged_file(files)
    if bad:
        raise InvalidInput(f"the file {bad[0]} is damaged: {bad[1]}", field=field, value=value, fix=fix)


def not_wan_dit(files: list[Path]) -> tuple[Path, str] | None:
    """Whole DiT files that hold no Wan DiT (no ``patch_embedding.weight``, with any prefix): why."""
    names = frozenset().union(*(header_facts(f)[1] for f in files if f.suffix == ".safetensors"))
    if names and not any(n.endswith("patch_embedding.weight") for n in names):
        return files[0], (f"not a Wan2.1 DiT: none of its {len(names)} tensors is patch_embedding.weight "
                          f"(it has e.g. {', '.join(sorted(names)[:3])})")
    return None


def wan_dit(field: str, value: object, transformer: Path, fix: str) -> None:
    """The DiT files are whole and hold a Wan DiT (``patch_embedding.weight``, with any prefix)."""
    files = [f for f in stfile.weight_files(transformer) if f.exists()]   # absent ones: the set's `missing`
    safetensors_files(field, value, files, fix)
    wrong = not_wan_dit(files)
    if wrong:
        raise InvalidInput(f"the file {wrong[0]} is {wrong[1]}", field=field, value=value, fix=WAN_DIT_FIX)
