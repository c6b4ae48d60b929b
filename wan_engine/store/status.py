"""What is on the volume, as one JSON-able document (CLI `status --json`, GET /wan_volume/status).

Each model set carries ``integrity``: ``verified`` (hashed, unchanged since), ``hub-metadata``
(hf download recorded the Hub's hashes; hashed at first load or by ``wanvolume.py adopt``),
``unknown`` (filled by hand) or ``bad`` (``bad_files`` says which and why). Each set and LoRA also
carries ``damaged``: null, or the file, problem, fix and message of the header check the loader
and LoRA nodes refuse it by (wan_engine/store/damage.py): a truncated file, a DiT that is not a Wan DiT.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from . import check as chk
from . import auto_set, comfy_dirs, damage, hf_status, integrity
from . import manifest as mf
from . import lock, paths, profiles, find as volume
from .scan import comfy_files

log = logging.getLogger(__name__)


def _verified(models_dir: Path, name: str) -> dict:
    """The last verify result for a set, if it still belongs to the current manifest."""
    try:
        data = json.loads(mf.verify_path(models_dir, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"verified": None, "verified_at": None}
    current = data.get("manifest_sha256") == _digest(models_dir, name)
    return {"verified": bool(data.get("ok")) if current else None,
            "verified_at": data.get("at") if current else None, "bad": data.get("bad", {})}


def _digest(models_dir: Path, name: str) -> str | None:
    try:
        return mf.manifest_digest(models_dir, name)
    except OSError:
        return None


def _preloaded(models_dir: Path) -> tuple[list[dict], dict[Path, bool | None]]:
    """Manifest-backed sets, and for each file on the volume whether its set verified."""
    out, files = [], {}
    for m in mf.list_manifests(models_dir):
        checked = chk.check_set(models_dir, m.name)
        ver = _verified(models_dir, m.name)
        out.append({"name": m.name, "ready": checked.ready, "problems": checked.problems,
                    "sources": [{"repo": s.repo, "revision": s.requested, "commit": s.commit}
                                for s in m.sources],
                    "files": len(m.entries), "size_bytes": m.total_size(), **ver,
                    "command": "" if checked.ready else checked.command})
        for e in m.entries.values():
            files[(models_dir / e.relpath).absolute()] = ver["verified"]
    return out, files


def _model_sets(models_dir: Path, verified_files: dict[Path, bool | None]) -> list[dict]:
    """Every set the scanners find, with what is known of its files' content (integrity.py)."""
    entries = integrity.index(models_dir)
    out = []
    for s in volume.scan_dir(models_dir):
        files = [p.absolute() for p in s.files()]
        covered = [verified_files.get(p, "absent") for p in files]
        verified = (None if not covered or "absent" in covered or None in covered
                    else all(covered))
        state, bad = integrity.set_state(files, entries)
        hurt = damage.set_damage(s)
        if verified is False:
            state = "bad"
        elif state == "verified":
            verified = True
        elif state == "bad":
            verified = False
        out.append({"name": s.name, "layout": s.layout, "root": str(s.root),
                    "complete": s.complete, "missing": list(s.missing),
                    "unfinished": s.unfinished, "resume": s.resume,
                    "verified": verified, "integrity": state, "bad_files": bad,
                    "damaged": hurt.as_dict() if hurt else None,
                    "size_bytes": s.size_bytes(), "label": s.label,
                    "components": {k: str(v) for k, v in s.components.items()},
                    "alternatives": {k: list(v) for k, v in s.alternatives.items() if len(v) > 1}})
    return out


def _loras(models_dir: Path) -> list[dict]:
    inside = [lf for lf in volume.find_loras() if models_dir in lf.path.absolute().parents]
    if models_dir not in [d.absolute() for d in paths.models_dirs()]:
        inside += volume.find_loras(extra_dirs=[models_dir / paths.LORA_SUBDIR])
    seen: dict[Path, dict] = {}
    for lf in inside:
        hurt = damage.lora_damage(lf.path, lf.name, models_dir)
        seen.setdefault(lf.path, {"name": lf.name, "path": str(lf.path),
                                  "size_bytes": lf.path.stat().st_size,
                                  "damaged": hurt.as_dict() if hurt else None})
    return list(seen.values())


def _profiles(models_dir: Path) -> list[dict]:
    out = []
    for p in profiles.PROFILES.values():
        ready = chk.check_set(models_dir, p.name).ready
        out.append({"name": p.name, "kind": p.kind, "description": p.description,
                    "approx_gb": p.approx_gb, "ready": ready, "provides": list(p.provides()),
                    "command": "" if ready else profiles.preload_command(p.name, models_dir)})
    return out


def _auto(models_dir: Path) -> list[dict]:
    """Each automatic model_set choice: the set it picks on this volume (``set``), or null with
    the command of the recommended profile that provides one (auto_set.py)."""
    picked = auto_set.picks(volume.volume_and_cache_sets(models_dir))
    return [{"value": c.value, "set": picked[c.value].name if picked[c.value] else None,
             "command": "" if picked[c.value] else auto_set.fix_command(c, models_dir)}
            for c in auto_set.CHOICES]


def volume_status(models_dir: Path | None = None) -> dict:
    """The status document. ``ready`` means a complete, undamaged model set and a LoRA are present
    (what the loader and LoRA dropdowns offer)."""
    models_dir = Path(models_dir or paths.primary_models_dir()).absolute()
    exists = models_dir.is_dir()
    preloaded, verified_files = _preloaded(models_dir) if exists else ([], {})
    sets = _model_sets(models_dir, verified_files) if exists else []
    loras = _loras(models_dir) if exists else []
    profs = _profiles(models_dir)
    hf = hf_status.cache_status()
    comfy = comfy_dirs.comfyui_status()
    have_set = any(s["complete"] and not s["damaged"] for s in sets + hf["model_sets"]) or any(
        p["ready"] for p in profs if p["kind"] == "model_set") or any(s["complete"] for s in comfy["model_sets"])
    ready = have_set and (any(not lf["damaged"] for lf in loras) or bool(hf["loras"]) or bool(comfy["loras"]))
    wanted = [] if ready else [p for p in profiles.RECOMMENDED if not any(
        q["name"] == p and q["ready"] for q in profs)]
    return {"models_dir": str(models_dir), "exists": exists,
            "searched": [str(p) for p in paths.candidate_models_dirs()],
            "ready": ready, "model_sets": sets, "loras": loras, "preloaded": preloaded,
            "hf_cache": hf,
            "comfyui": comfy,   # ComfyUI's own models/ folders, which the loader searches too
            "choice_rule": comfy_files.RULE,
            "auto": _auto(models_dir), "auto_rule": auto_set.RULE,
            "writer": lock.holder(models_dir) if exists else None,   # a preload writing now
            "profiles": profs,
            "command": " && ".join(profiles.preload_command(p, models_dir) for p in wanted)}


def summary_line(doc: dict) -> str:
    """One log line for ComfyUI start-up."""
    hf_sets = doc.get("hf_cache", {}).get("model_sets", [])
    complete = [s["name"] for s in doc["model_sets"] + hf_sets if s["complete"]]
    partial = [s["name"] for s in doc["model_sets"] if not s["complete"] and not s["unfinished"]]
    unfinished = [s["name"] for s in doc["model_sets"] if s["unfinished"]]
    damaged = [s["name"] for s in doc["model_sets"] if s["damaged"]] + [
        lf["name"] for lf in doc["loras"] if lf["damaged"]]
    state = "ready" if doc["ready"] else f"NOT ready; run: {doc['command'] or 'see /wan_volume/status'}"
    return (f"WanVolume: {doc['models_dir']}{'' if doc['exists'] else ' (absent)'}: "
            f"{len(complete)} complete set(s) {complete}, {len(partial)} incomplete, "
            f"{f'{len(unfinished)} pre-load(s) not finished {unfinished}, ' if unfinished else ''}"
            f"{len(doc['loras'])} LoRA(s); "
            f"{f'DAMAGED (see `python wanvolume.py status`): {damaged}; ' if damaged else ''}{state}")
