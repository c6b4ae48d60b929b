"""The Hugging Face caches in the status document: where was searched, what was found there, and
where the pack keeps its own records of them (it never writes into a cache)."""
from __future__ import annotations

from pathlib import Path

from . import damage, hf_cache, hf_verify, integrity
from . import find as volume
from .progress import human_bytes, table


def _state(files: list[Path]) -> tuple[str, dict[str, str]]:
    """The weakest of verified / hub-metadata / unknown / bad over ``files``."""
    states, bad = [], {}
    for f in files:
        problem = integrity.header_problem(f) if f.exists() else "missing"
        if problem:
            bad[str(f)] = problem
            states.append("bad")
        else:
            states.append(hf_verify.file_state(f))
    worst = max((integrity.STATES.index(s) for s in states), default=integrity.STATES.index("unknown"))
    return integrity.STATES[worst], bad


def cache_status() -> dict:
    """``hf_cache`` of the status document."""
    sets = []
    for s in volume.scan_hf_caches():
        files = [p.absolute() for p in s.files()]
        state, bad = _state(files)
        hurt = damage.set_damage(s) if s.complete else None
        snap = hf_cache.cache_of(s.components.get("transformer", s.root))
        sets.append({"name": s.name, "layout": s.layout, "root": str(s.root),
                     "repo": snap.repo_id if snap else None, "revision": snap.revision if snap else None,
                     "complete": s.complete, "missing": list(s.missing), "integrity": state,
                     "bad_files": bad, "damaged": hurt.as_dict() if hurt else None,
                     "size_bytes": s.size_bytes(), "label": s.label})
    loras = [{"name": lf.name, "path": str(lf.path), "size_bytes": lf.path.stat().st_size,
              "integrity": hf_verify.file_state(lf.path)}
             for lf in volume.find_loras() if hf_cache.cache_of(lf.path) is not None]
    return {"searched": [str(p) for p in hf_cache.candidate_roots()],
            "found": [str(p) for p in hf_cache.roots()],
            "state_file": str(hf_verify.state_file()),
            "writes_into_cache": False, "model_sets": sets, "loras": loras}


def cache_text(hf: dict, yes_no) -> list[str]:
    """``status``'s text for the caches: where searched, what is there, where the records go."""
    out = [f"Hugging Face caches searched: {', '.join(hf['searched']) or 'none'} "
           f"(found: {', '.join(hf['found']) or 'none'}); the pack writes nothing there, its hash "
           f"records go to {hf['state_file']}"]
    if hf["model_sets"]:
        out.append(table(("cached set", "repo@revision", "complete", "hashes", "size", "missing"),
                         [(s["name"], f"{s['repo']}@{(s['revision'] or '')[:8]}", yes_no(s["complete"]),
                           s["integrity"], human_bytes(s["size_bytes"]), "; ".join(s["missing"]))
                          for s in hf["model_sets"]]))
    if hf["loras"]:
        out.append(table(("cached LoRA", "hashes", "size"),
                         [(lf["name"], lf["integrity"], human_bytes(lf["size_bytes"])) for lf in hf["loras"]]))
    return out
