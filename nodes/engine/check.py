"""The start-up check: is the volume ready? Sizes and file headers only, no hashing.

Reads a few bytes per file (safetensors header, zip magic and end record of .pth files), so a
full 80 GB set checks in milliseconds even on a network volume.
"""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest as mf
from . import profiles

MAX_HEADER = 100_000_000
ZIP_MAGIC = b"PK\x03\x04"
ZIP_END = b"PK\x05\x06"


@dataclass
class SetCheck:
    name: str
    ready: bool
    problems: list[str] = field(default_factory=list)
    command: str = ""


@dataclass
class CheckReport:
    models_dir: Path
    sets: list[SetCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.sets) and all(s.ready for s in self.sets)

    def message(self) -> str:
        if self.ok:
            names = ", ".join(s.name for s in self.sets)
            return f"volume ready: {self.models_dir} ({names}; checked in {self.seconds:.3f}s)"
        lines = [f"volume NOT ready: {self.models_dir}"]
        for s in self.sets:
            if s.ready:
                lines.append(f"  {s.name}: ready")
                continue
            lines += [f"  {s.name}: {p}" for p in s.problems]
            lines.append(f"  fetch it with: {s.command}")
        return "\n".join(lines)


def set_command(man: mf.Manifest | None, name: str, models_dir: Path) -> str:
    """The exact command that fetches (or finishes) the set ``name``."""
    if name in profiles.PROFILES or man is None or len(man.sources) != 1:
        return profiles.preload_command(name, models_dir)
    pin = man.sources[0]
    return (f"python wanvolume.py preload --repo {pin.repo} --revision {pin.requested} "
            f"--models-dir {models_dir}")


def check_set(models_dir: Path, name: str) -> SetCheck:
    man = mf.load_manifest(models_dir, name)
    cmd = set_command(man, name, models_dir)
    if man is None:
        return SetCheck(name, False, [f"not pre-loaded (no manifest in {mf.state_dir(models_dir)})"], cmd)
    problems = []
    if not mf.is_marked_ready(models_dir, name):
        problems.append("pre-load did not finish (no ready marker)")
    for entry in man.entries.values():
        problem = check_file(models_dir / entry.relpath, entry.size)
        if problem:
            problems.append(f"{entry.relpath}: {problem}")
    return SetCheck(name, not problems, problems, cmd)


def check_file(path: Path, size: int) -> str | None:
    """None when the file has the right size and a sound header; else what is wrong."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if actual != size:
        return f"size {actual} bytes, expected {size}"
    try:
        with open(path, "rb") as fh:
            return _header_problem(path.suffix.lower(), fh, size)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def _header_problem(suffix: str, fh: object, size: int) -> str | None:
    if suffix == ".safetensors":
        return _safetensors_problem(fh, size)
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        head = fh.read(4)  # type: ignore[attr-defined]
        if head[:1] == b"\x80":
            return None  # legacy pickle format
        if head != ZIP_MAGIC:
            return "not a torch zip file (bad magic)"
        fh.seek(max(0, size - 65_557))  # type: ignore[attr-defined]
        return None if ZIP_END in fh.read() else "torch zip file has no end record (truncated)"  # type: ignore[attr-defined]
    if suffix == ".json" and size < 50_000_000:
        try:
            json.loads(fh.read())  # type: ignore[attr-defined]
        except ValueError:
            return "not valid JSON"
    return None


def _safetensors_problem(fh: object, size: int) -> str | None:
    try:
        (length,) = struct.unpack("<Q", fh.read(8))  # type: ignore[attr-defined]
        if length > min(MAX_HEADER, size - 8):
            return f"header length {length} does not fit the file"
        header = json.loads(fh.read(length))  # type: ignore[attr-defined]
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, IndexError):
        return "unreadable safetensors header"
    if 8 + length + max(ends, default=0) != size:
        return "safetensors header does not match the file size (truncated or padded)"
    return None


def _unmanaged(models_dir: Path) -> list[SetCheck]:
    """No preload ran here: accept complete sets the layout scanners find (filled by hand)."""
    from . import volume
    found = [s for scan in volume.SCANNERS for s in scan(models_dir)] if models_dir.is_dir() else []
    ready = [SetCheck(f"{s.name} (not pre-loaded: sizes and hashes unknown)", True)
             for s in found if s.complete]
    return ready or [SetCheck(p, False, ["nothing pre-loaded on this volume"],
                              profiles.preload_command(p, models_dir))
                     for p in profiles.RECOMMENDED]


def check(models_dir: Path, profile: str | None = None) -> CheckReport:
    """Check one profile, or every set pre-loaded on the volume."""
    started = time.perf_counter()
    models_dir = Path(models_dir)
    report = CheckReport(models_dir)
    if profile is not None:
        profiles.get_profile(profile)
        report.sets.append(check_set(models_dir, profile))
    else:
        names = [m.name for m in mf.list_manifests(models_dir)]
        report.sets += [check_set(models_dir, n) for n in names] or _unmanaged(models_dir)
    report.seconds = time.perf_counter() - started
    return report
