"""Small helpers shared by tests: tiny requests and the shipped workflows pointed at the tiny volume."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from nodes.engine import tiny_model
from nodes.engine.decode import TileSettings
from nodes.engine.sampling import SampleRequest

REPO = Path(__file__).resolve().parent.parent
TINY_LORA = "loras/tiny_kissing_style_lora.safetensors"
API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))


def tiny_request(**over) -> SampleRequest:
    values = dict(prompt="two people smile, then they engage in k144ing kissing.", width=64,
                  height=48, frames=5, steps=2, cfg=5.0, shift=5.0, seed=3,
                  tiles=TileSettings(True, 64, 32))
    values.update(over)
    return SampleRequest(**values)


def tiny_workflow(path: Path, image_name: str, **sampler) -> dict:
    """A shipped API workflow with only model names, image and sizes changed."""
    wf = copy.deepcopy(json.loads(Path(path).read_text()))
    by_type = {n["class_type"]: k for k, n in wf.items()}
    wf[by_type["WanVolumeModelLoader"]]["inputs"].update(model_set=tiny_model.TINY_SET_NAME)
    wf[by_type["WanVolumeLoraApply"]]["inputs"].update(lora=TINY_LORA)
    wf[by_type["LoadImage"]]["inputs"].update(image=image_name)
    wf[by_type["WanVolumeSampler"]]["inputs"].update(dict(width=64, height=48, frames=5, steps=2) | sampler)
    return wf


def node_id(wf: dict, class_type: str) -> str:
    return next(k for k, n in wf.items() if n["class_type"] == class_type)
