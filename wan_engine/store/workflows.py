"""Which shipped workflows (workflows/api/*.json) a volume can run, and what each one misses.

Reads the API files as they ship: the loader's ``model_set`` (an auto value resolves by
auto_set.py's rule, as the node does) and every LoRA node's ``lora`` (found under the models dir
by its name, as the profiles put them, or where the LoRA dropdown finds it). Each missing part
comes with the preload command of the profile that provides it. Used by ``wanvolume.py check``
and the status document. Headers only; torch-free (store).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import auto_set, damage, profiles, find as volume

log = logging.getLogger(__name__)

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows" / "api"
LOADER = "WanVolumeModelLoader"
LORA = "WanVolumeLoraApply"
# The workflows the recommended profiles (profiles.RECOMMENDED) serve: what a new user runs first.
RECOMMENDED = ("kiss_i2v_720p", "kiss_i2v_720p_fast")


@dataclass
class WorkflowCheck:
    name: str                      # the file's stem: kiss_i2v_720p
    model_set: str                 # the value the workflow carries
    resolved: str = ""             # the set it runs with on this volume ("" when none)
    missing: list[str] = field(default_factory=list)    # what is missing or damaged
    commands: list[str] = field(default_factory=list)   # what fetches it

    @property
    def ready(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict:
        return {"name": self.name, "model_set": self.model_set, "resolved": self.resolved,
                "ready": self.ready, "missing": self.missing, "commands": self.commands}


def shipped(folder: Path = WORKFLOWS_DIR) -> dict[str, dict]:
    """Every shipped API workflow by name."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def check_workflow(name: str, api: dict, models_dir: Path, sets: list, lora_names: set[str],
                   picked: dict) -> WorkflowCheck:
    """``picked``: auto_set.picks(sets), once for all the workflows checked."""
    nodes = list(api.values())
    loader = next(n["inputs"] for n in nodes if n.get("class_type") == LOADER)
    out = WorkflowCheck(name, str(loader.get("model_set")))
    _check_set(out, sets, models_dir, picked)
    for node in nodes:
        if node.get("class_type") == LORA:
            _check_lora(out, str(node["inputs"].get("lora")), models_dir, lora_names)
    out.commands = list(dict.fromkeys(out.commands))
    return out


def _check_set(out: WorkflowCheck, sets: list, models_dir: Path, picked: dict) -> None:
    value = out.model_set
    if auto_set.is_auto(value):
        choice = auto_set.choice_of(value)
        if picked.get(value) is not None:
            out.resolved = picked[value].name
            return
        out.missing.append(f"model set: no complete set for {value}")
        out.commands.append(auto_set.fix_command(choice, models_dir) if choice else
                            "python wanvolume.py status")
        return
    found = next((s for s in sets if s.name == value), None)
    if found is not None and auto_set.problem(found) is None:
        out.resolved = found.name
        return
    out.missing.append(f"model set {value}" + (f": {auto_set.problem(found)}" if found else ": not on the volume"))
    out.commands.append(profiles.preload_command(value if value in profiles.PROFILES else
                                                 profiles.RECOMMENDED[0], models_dir))


def _check_lora(out: WorkflowCheck, name: str, models_dir: Path, lora_names: set[str]) -> None:
    path = models_dir / name
    if path.is_file():
        hurt = damage.lora_damage(path, name, models_dir)
        if hurt is None:
            return
        out.missing.append(f"LoRA {name}: {hurt.problem}")
    elif name in lora_names:
        return
    else:
        out.missing.append(f"LoRA {name}")
    out.commands.append(profiles.fetch_hint(name, models_dir, kind="lora"))


def check_all(models_dir: Path, folder: Path = WORKFLOWS_DIR) -> list[WorkflowCheck]:
    """Each shipped workflow against the sets of ``models_dir`` (and the HF caches)."""
    models_dir = Path(models_dir).absolute()
    sets = volume.volume_and_cache_sets(models_dir)
    lora_names = {lf.name for lf in volume.find_loras()}
    picked = auto_set.picks(sets)
    return [check_workflow(name, api, models_dir, sets, lora_names, picked)
            for name, api in shipped(folder).items()]


def report_lines(checks: list[WorkflowCheck]) -> list[str]:
    """For ``check``: one line per workflow (ready with the set it runs with, or what it misses
    and the commands that fetch it)."""
    lines = ["shipped workflows (workflows/):"]
    for c in checks:
        if c.ready:
            lines.append(f"  {c.name}: ready ({c.model_set} -> {c.resolved})" if c.resolved != c.model_set
                         else f"  {c.name}: ready ({c.resolved})")
        else:
            lines.append(f"  {c.name}: missing {'; '.join(c.missing)}; fetch with: {' && '.join(c.commands)}")
    return lines
