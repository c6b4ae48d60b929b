"""The start-up check: is the volume ready? Sizes and file headers only, no hashing.

Reads a few bytes per file (integrity.header_problem: safetensors header via stfile.py, zip
magic and end record of .pth files), and none of a file whose hash a manifest verified, so a
full 80 GB set checks in milliseconds even on a network volume.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import integrity, profiles
from . import manifest as mf
from . import workflows as wf


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
    # the shipped workflows (whole-volume check only): which can run, what the others miss.
    # Informational: the exit code stays "every set on the volume is sound" (docs/volume.md).
    workflows: list[wf.WorkflowCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.sets) and all(s.ready for s in self.sets)

    def message(self) -> str:
        tail = "\n" + "\n".join(wf.report_lines(self.workflows)) if self.workflows else ""
        return self._sets_message() + tail

    def _sets_message(self) -> str:
        if self.ok:
            names = ", ".join(s.name for s in self.sets)
            return f"volume ready: {self.models_dir} ({names}; checked in {self.seconds:.3f}s)"
        lines = [f"volume NOT ready: {self.models_dir}"]
        for s in self.sets:
            if s.ready:
                lines.append(f"  {s.name}: ready")
                continue
            lines += [f"  {s.name}: {p}" for p in s.problems]
            verb = ("resume" if any("not finished" in p for p in s.problems) else
                    "rebuild" if any("unreadable (" in p for p in s.problems) else "fetch")
            lines.append(f"  {verb} it with: {s.command}")
        return "\n".join(lines)


def set_command(man: mf.Manifest | None, name: str, models_dir: Path) -> str:
    """The exact command that fetches (or finishes) the set ``name``."""
    if name in profiles.PROFILES or man is None or len(man.sources) != 1:
        return profiles.preload_command(name, models_dir)
    pin = man.sources[0]
    return (f"python wanvolume.py preload --repo {pin.repo} --revision {pin.requested} "
            f"--models-dir {models_dir}")


def broken_sets(models_dir: Path) -> list[SetCheck]:
    """Manifests that exist but cannot be read (torn by a crash, emptied): named with the command
    that rebuilds them. A preload re-hashes the files already there and fetches none that match."""
    out = []
    for name, why in mf.broken_manifests(models_dir).items():
        cmd = (profiles.preload_command(name, models_dir) if name in profiles.PROFILES else
               f"the `python wanvolume.py preload --repo ...` command that fetched {name}, again")
        out.append(SetCheck(name, False, [
            f"manifest {mf.manifest_path(models_dir, name)} is unreadable ({why}); rebuild it "
            "(the preload re-hashes the files on the volume and downloads only what does not "
            "match)"], cmd))
    return out


def check_set(models_dir: Path, name: str) -> SetCheck:
    man = mf.load_manifest(models_dir, name)
    cmd = set_command(man, name, models_dir)
    if man is None:
        return SetCheck(name, False, [f"not pre-loaded (no manifest in {mf.state_dir(models_dir)})"], cmd)
    problems = []
    adopted = bool(man.entries) and all(e.origin == mf.ORIGIN_HF_LOCAL for e in man.entries.values())
    if not adopted and not mf.is_marked_ready(models_dir, name):
        parts = _part_count(models_dir, man)
        problems.append("pre-load not finished (no ready marker"
                        f"{f'; {parts} partial .part file(s)' if parts else ''}): a preload is "
                        "writing it, or was stopped; resume it with the command below")
    for entry in man.entries.values():
        problem = check_file(models_dir / entry.relpath, entry.size, entry)
        if problem:
            problems.append(f"{entry.relpath}: {problem}")
    problems += failed_verification(models_dir, name)
    return SetCheck(name, not problems, problems, cmd)


def failed_verification(models_dir: Path, name: str) -> list[str]:
    """The files the last ``verify`` of set ``name`` found changed, while that result still belongs
    to the manifest (a preload that re-fetches them writes a new one; a passing verify clears it)."""
    try:
        data = json.loads(mf.verify_path(models_dir, name).read_text(encoding="utf-8"))
        if data.get("ok", True) or data.get("manifest_sha256") != mf.manifest_digest(models_dir, name):
            return []
    except (OSError, ValueError, AttributeError):
        return []
    return [f"{rel}: failed verification ({why}); re-fetch it (only files whose hash does not "
            "match are downloaded) with the command below" for rel, why in sorted(data.get("bad", {}).items())]


def _part_count(models_dir: Path, man: mf.Manifest) -> int:
    """``.part`` files in the top folders the manifest's files live in."""
    tops = {e.relpath.split("/")[0] for e in man.entries.values() if "/" in e.relpath}
    return sum(len(mf.part_files(models_dir / t)) for t in tops if (models_dir / t).is_dir())


def check_file(path: Path, size: int, entry: mf.ManifestEntry | None = None) -> str | None:
    """None when the file has the right size and a sound header; else what is wrong.

    A file whose hash the manifest verified (same size and mtime since) is not sniffed: a header
    guess never contradicts a verified hash.
    """
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if actual != size:
        return f"size {actual} bytes, expected {size}"
    if entry is not None and entry.vouches_for(path):
        return None
    return integrity.header_problem(path)


def unmanaged_sets(models_dir: Path, covered: dict[Path, mf.ManifestEntry]) -> list[SetCheck]:
    """Complete sets the layout scanners find that no manifest fully covers (filled by hand or
    by hf download): header checks, and what the Hub recorded."""
    from . import find as volume
    out = []
    for s in volume.scan_dir(models_dir):
        files = [f.absolute() for f in s.files()]
        if s.unfinished and not any(f in covered for f in files):   # no manifest yet: .part files
            out.append(SetCheck(s.name, False, [s.unfinished], s.resume))
        if not s.complete or all(f in covered for f in files):   # check_set covers it
            continue
        state, bad = integrity.set_state(files, covered)
        label = {"hub-metadata": "hf download: the Hub's hashes are recorded; "
                                 f"`python wanvolume.py adopt {s.root.name}` hashes it now",
                 "verified": "hashes verified"}.get(state, "filled by hand: hashes unknown")
        problems = [f"{Path(p).relative_to(models_dir)}: {why}" for p, why in bad.items()]
        out.append(SetCheck(f"{s.name} ({label})", not problems, problems,
                            _refetch_command(s, models_dir)))
    return out


def comfyui_sets(models_dir: Path) -> list[SetCheck]:
    """Complete sets in ComfyUI's own models/ folders (comfy_dirs.py), which the loader offers too:
    header checks. Sets under ``models_dir`` are checked above already."""
    from . import comfy_dirs
    comfy = comfy_dirs.comfyui_dir()
    out = []
    for s in comfy_dirs.model_sets(comfy) if comfy else []:
        if not s.complete or models_dir in Path(s.root).absolute().parents:
            continue
        bad = {f: why for f in s.files() if (why := integrity.header_problem(f))}
        out.append(SetCheck(f"{s.name} (ComfyUI's models: {comfy / 'models'})", not bad,
                            [f"{f}: {why}" for f, why in bad.items()], _refetch_command(s, models_dir)))
    return out


def _refetch_command(model_set: object, models_dir: Path) -> str:
    """The profile that fetches a set with this folder name, else the recommended one."""
    from .adopt import manifest_name
    name, _ = manifest_name(Path(model_set.root))  # type: ignore[attr-defined]
    return profiles.preload_command(name if name in profiles.PROFILES else
                                    profiles.RECOMMENDED[0], models_dir)


def check(models_dir: Path, profile: str | None = None) -> CheckReport:
    """Check one profile, or every set on the volume (pre-loaded, adopted, or found by scanning)."""
    started = time.perf_counter()
    models_dir = Path(models_dir).absolute()
    report = CheckReport(models_dir)
    if profile is not None:
        profiles.get_profile(profile)
        report.sets.append(check_set(models_dir, profile))
    else:
        names = [m.name for m in mf.list_manifests(models_dir)]
        report.sets += broken_sets(models_dir)
        report.sets += [check_set(models_dir, n) for n in names]
        report.sets += unmanaged_sets(models_dir, integrity.index(models_dir))
        report.sets += comfyui_sets(models_dir)
        if not report.sets:
            report.sets = [SetCheck(p, False, ["nothing on this volume: no pre-loaded set and no "
                                               "complete model set found"],
                                    profiles.preload_command(p, models_dir))
                           for p in profiles.RECOMMENDED]
        report.workflows = wf.check_all(models_dir)
    report.seconds = time.perf_counter() - started
    return report
