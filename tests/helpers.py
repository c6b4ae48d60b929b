"""Small helpers shared by tests: tiny requests and the shipped workflows pointed at the tiny volume."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from wan_engine import tiny_model
from wan_engine.sample.decode import TileSettings
from wan_engine.sample.sampling import SampleRequest

REPO = Path(__file__).resolve().parent.parent
TINY_LORA = "loras/tiny_kissing_style_lora.safetensors"
TINY_DISTILL_LORA = tiny_model.TINY_DISTILL_LORA
API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("kiss_*.json"))          # Wan2.1 sets
WAN22_API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("wan22_*.json"))  # Wan2.2 (tests/test_wan22_server.py)


def tiny_request(**over) -> SampleRequest:
    values = dict(prompt="two people smile, then they engage in k144ing kissing.", width=64,
                  height=48, frames=5, steps=2, cfg=5.0, shift=5.0, seed=3,
                  tiles=TileSettings(True, 64, 32))
    values.update(over)
    return SampleRequest(**values)


def tiny_workflow(path: Path, image_name: str, **sampler) -> dict:
    """A shipped API workflow with only model names, image and sizes changed.

    Each LoRA node gets its tiny stand-in (the distill LoRA for a distill LoRA node); a workflow
    on the 4-step distill schedule keeps its 4 steps, the others run 2."""
    wf = copy.deepcopy(json.loads(Path(path).read_text()))
    by_type = {n["class_type"]: k for k, n in wf.items()}
    wf[by_type["WanVolumeModelLoader"]]["inputs"].update(model_set=tiny_model.TINY_SET_NAME)
    for node in wf.values():
        if node["class_type"] == "WanVolumeLoraApply":
            node["inputs"]["lora"] = TINY_DISTILL_LORA if "distill" in node["inputs"]["lora"] else TINY_LORA
    wf[by_type["LoadImage"]]["inputs"].update(image=image_name)
    inputs = wf[by_type["WanVolumeSampler"]]["inputs"]
    small = dict(width=64, height=48, frames=5)
    if inputs.get("schedule") != "distill_4step":
        small["steps"] = 2
    inputs.update(small | sampler)
    return wf


def node_id(wf: dict, class_type: str) -> str:
    return next(k for k, n in wf.items() if n["class_type"] == class_type)


def sampler_refusal(server, image_name: str, field: str, value) -> list[dict]:
    """Queue the first shipped API workflow with one sampler input changed; it must be refused
    with HTTP 400: the sampler's node errors."""
    wf = tiny_workflow(API_WORKFLOWS[0], image_name)
    sampler = node_id(wf, "WanVolumeSampler")
    wf[sampler]["inputs"][field] = value
    status, body = server.queue(wf)
    assert status == 400, body
    return body["node_errors"][sampler]["errors"]
