"""``model_set = "auto: ..."``: the best complete set of one family and resolution on the volume.

The shipped workflows name an auto value instead of a set's folder name, so they run on every
volume the docs tell users to build (the recommended ComfyUI files, the diffusers or original
layouts, the Hugging Face cache). One function, ``resolve``, picks the set for the loader node,
its ``/prompt`` validation, the status document (badge) and ``wanvolume.py check``.

The rule (``RULE``; docs/volume.md, "Which set `auto` picks"): among the sets of that family whose
name or DiT file name carries the resolution (``720p``/``480p``, any case; Wan2.2 A14B has one
model for both), that are complete (unfinished preloads excluded) and undamaged (header check):
full-precision layouts (diffusers or original Wan, on the volume or in the HF cache) first, then
ComfyUI files in 16/32-bit, then fp8, then GGUF; ties by name. Explicit set names never pass
through here. Torch-free (store).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import damage, profiles
from .identify import identify_file
from .modelset import ModelSet

log = logging.getLogger(__name__)

PREFIX = "auto: "
RULE = ("complete, undamaged sets of that family and resolution; diffusers/original layout > "
        "ComfyUI files 16/32-bit > fp8 > GGUF; then by name")
TIERS = ("diffusers/original", "ComfyUI 16/32-bit", "fp8", "GGUF")


@dataclass(frozen=True)
class AutoChoice:
    value: str            # the dropdown value
    family: str           # ModelSet.family: "Wan2.1" | "Wan2.2"
    resolution: str       # "720p" | "480p" | "" (any)
    profiles: tuple[str, ...]   # what to preload when nothing fits (the recommended profiles first)


CHOICES = (
    AutoChoice(f"{PREFIX}Wan2.1 I2V 720P", "Wan2.1", "720p", ("comfy-720p-bf16", "wan21-i2v-720p-diffusers")),
    AutoChoice(f"{PREFIX}Wan2.1 I2V 480P", "Wan2.1", "480p", ("comfy-480p-bf16", "wan21-i2v-480p-diffusers")),
    AutoChoice(f"{PREFIX}Wan2.2 I2V A14B", "Wan2.2", "", ("wan22-comfy-fp16", "wan22-comfy-fp8")),
)
VALUES = tuple(c.value for c in CHOICES)


def is_auto(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def choice_of(value: str) -> AutoChoice | None:
    return next((c for c in CHOICES if c.value == value), None)


def _resolution(s: ModelSet) -> str:
    """``720p``/``480p`` from the set's name or its DiT's file name; "" when neither says."""
    dit = s.components.get("transformer")
    for text in (s.name, Path(dit).name if dit else ""):
        found = re.search(r"(?<!\d)(720|480)p", text, re.IGNORECASE)
        if found:
            return found.group(1) + "p"
    return ""


def fits(s: ModelSet, choice: AutoChoice) -> bool:
    """Same family and resolution (complete or not: see ``usable``)."""
    return s.family == choice.family and (not choice.resolution or _resolution(s) == choice.resolution)


def tier(s: ModelSet) -> int:
    """The set's place in the rule's order (index into ``TIERS``)."""
    dit = s.components.get("transformer")
    if dit is None or Path(dit).is_dir() or Path(dit).suffix not in (".safetensors", ".gguf"):
        return 0                   # diffusers folder, original shards: full precision
    if Path(dit).suffix == ".gguf":
        return 3
    what = identify_file(Path(dit))
    if what is not None and what.form == "gguf":
        return 3
    return 2 if what is not None and what.precision.startswith("F8") else 1


def problem(s: ModelSet) -> str | None:
    """Why a set cannot be used: unfinished, incomplete or damaged (headers only)."""
    if s.unfinished:
        return s.unfinished
    if s.missing:
        return "misses " + ", ".join(s.missing)
    bad = damage.set_damage(s)
    if bad:
        return bad.message
    from .scan import wan22
    expert = wan22.expert_problem(s)
    return f"the file {expert[0]} is {expert[1]}" if expert else None


def candidates(choice: AutoChoice, sets: Iterable[ModelSet]) -> list[ModelSet]:
    """The usable sets that fit ``choice``, best first (``RULE``)."""
    usable = [s for s in sets if fits(s, choice) and problem(s) is None]
    return sorted(usable, key=lambda s: (tier(s), s.name))


def picks(sets: Iterable[ModelSet]) -> dict[str, ModelSet | None]:
    """Each auto value's best set on this volume (None: none fits), each set checked once."""
    sets = list(sets)
    return {c.value: next(iter(candidates(c, sets)), None) for c in CHOICES}


def resolve(value: str, sets: Iterable[ModelSet], models_dir: object | None = None) -> ModelSet:
    """The set ``value`` (an auto value) means on this volume, or an error naming the field, the
    value, what the volume holds and the preload command of the recommended profile."""
    from ..errors import ModelSetNotFound

    sets = list(sets)
    choice = choice_of(value)
    if choice is None:
        raise ModelSetNotFound("no such automatic choice", field="model_set", value=value,
                               fix=f"pick one of: {', '.join(VALUES)}, or a set's own name")
    best = candidates(choice, sets)
    if best:
        return best[0]
    raise ModelSetNotFound(
        f"no complete {choice.family} I2V {choice.resolution.upper() or 'A14B'} set on the volume. "
        f"The volume holds: {holdings(sets)}", field="model_set", value=value,
        fix=f"fetch one with `{fix_command(choice, models_dir)}`, or pick a set the volume holds")


def fix_command(choice: AutoChoice, models_dir: object | None = None) -> str:
    return profiles.preload_command(choice.profiles[0], models_dir)


def holdings(sets: Iterable[ModelSet]) -> str:
    """Each set by name, with why it is not usable (if it is not); "no model set" when none."""
    out = []
    for s in sets:
        why = problem(s)
        out.append(s.name + (f" ({why})" if why else ""))
    return "; ".join(out) or "no model set"


_logged: dict[str, str] = {}


def log_choice(value: str, found: ModelSet) -> None:
    """One INFO line when an auto value resolves to a set (again when the set changes)."""
    if _logged.get(value) != found.name:
        _logged[value] = found.name
        log.info("model_set %s -> %s (rule: %s)", value, found.name, RULE)
