"""Where the volume's models live.

Order (first existing wins for the primary dir; all existing are searched):
env WAN_VOLUME_MODELS_DIR, env MODEL_CACHE_DIR (the original setup guide's name),
/workspace/models (RunPod Pods), /runpod-volume/models (RunPod Serverless).
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_MODELS_DIR = "WAN_VOLUME_MODELS_DIR"
ENV_MODEL_CACHE_DIR = "MODEL_CACHE_DIR"
DEFAULT_DIRS = (Path("/workspace/models"), Path("/runpod-volume/models"))

LORA_SUBDIR = "loras"


def candidate_models_dirs() -> list[Path]:
    """Every place a models dir may be, in resolution order (existing or not)."""
    out: list[Path] = []
    for var in (ENV_MODELS_DIR, ENV_MODEL_CACHE_DIR):
        value = os.environ.get(var, "").strip()
        if value:
            out.append(Path(value).expanduser())
    out.extend(DEFAULT_DIRS)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def models_dirs() -> list[Path]:
    """The candidate dirs that exist, in resolution order."""
    return [p for p in candidate_models_dirs() if p.is_dir()]


def primary_models_dir() -> Path:
    """The models dir writes go to: the first existing candidate, else the first candidate."""
    existing = models_dirs()
    return existing[0] if existing else candidate_models_dirs()[0]
