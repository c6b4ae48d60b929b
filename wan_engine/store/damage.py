"""Which model sets and LoRAs on the volume are damaged, by the header check the nodes use.

The loader and LoRA nodes refuse a damaged file at /prompt and leave it out of their dropdowns;
the status document (CLI ``status``, GET /wan_volume/status, the editor's panel and badge) shows
the same reason through ``set_damage``/``lora_damage``. Headers only, never hashing; each header
is read once per version of the file (``headers.header_facts``), the sets come from the cached
volume index.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from . import headers, profiles, stfile
from .modelset import ModelSet

SET_FIX = ("run `python wanvolume.py check` to list every damaged file, then copy them again or fetch "
           "them with `python wanvolume.py preload --profile ...`")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".pth", ".bin")   # a component named so must be a file
LORA_FIX = "copy the file onto the volume again, or pick another"   # a LoRA no profile fetches


def lora_fix(name: str | None, models_dir: Path | None = None) -> str:
    """The fix for a damaged LoRA: the command that fetches this very file again, if a profile
    provides it (profiles.py), else ``LORA_FIX``."""
    profile = profiles.profile_for_file(name, "lora") if name else None
    if profile is None:
        return LORA_FIX
    return f"fetch the file again (`{profiles.preload_command(profile.name, models_dir)}`) or pick another"


@dataclass(frozen=True)
class Damage:
    file: str        # the first damaged file
    problem: str     # what is wrong with it ("header length ... truncated", "not a Wan2.1 DiT: ...")
    fix: str

    @property
    def message(self) -> str:
        """As the nodes word it: "the file X is damaged: ..." / "the file X is not a Wan2.1 DiT: ..."."""
        verb = "" if self.problem.startswith("not a ") else "damaged: "
        return f"the file {self.file} is {verb}{self.problem}"

    def as_dict(self) -> dict:
        return asdict(self) | {"message": self.message}


def set_damage(found: ModelSet) -> Damage | None:
    """The set's first damaged safetensors file, or a DiT that is not a Wan DiT; None when sound.

    Files that are absent are the set's ``missing`` list, not damage."""
    for path in found.components.values():
        if Path(path).suffix in WEIGHT_SUFFIXES and Path(path).is_dir():
            return Damage(str(path), "a folder where a weights file should be", SET_FIX)
    bad = headers.damaged_file(p for p in found.files() if p.exists())
    if bad:
        return Damage(str(bad[0]), bad[1], SET_FIX)
    transformer = found.components.get("transformer")
    if transformer is None or not Path(transformer).exists():
        return None
    try:
        files = [f for f in stfile.weight_files(transformer) if f.exists()]   # absent: the set's `missing`
    except stfile.HeaderError as exc:
        return Damage(str(transformer), str(exc).split(": ", 1)[-1], SET_FIX)
    bad = headers.damaged_file(files)
    if bad:
        return Damage(str(bad[0]), bad[1], SET_FIX)
    wrong = headers.not_wan_dit(files)
    return Damage(str(wrong[0]), wrong[1], headers.WAN_DIT_FIX) if wrong else None


def lora_damage(path: Path, name: str | None = None, models_dir: Path | None = None) -> Damage | None:
    """A LoRA file whose safetensors header is unreadable or does not fit its size; ``name`` (the
    dropdown name, relative to <models>) picks the command that fetches it again."""
    bad = headers.damaged_file([Path(path)])
    return Damage(str(bad[0]), bad[1], lora_fix(name, models_dir)) if bad else None
