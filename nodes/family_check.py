"""/prompt refuses inputs that do not fit the model set's family (Wan2.1: one DiT; Wan2.2: two experts).

A node's ``validate_inputs`` sees only its own inputs, so the sampler cannot know which set its
``pipe`` link carries. This middleware on ``POST /prompt`` follows each sampler's ``pipe`` link up
through the LoRA nodes to the loader, looks the loader's ``model_set`` up on the volume, and refuses
(HTTP 400, ComfyUI's ``node_errors`` shape, naming the node, the field, the value and the fix):
the sampler's ``boundary`` / ``cfg_low_noise`` and a LoRA node's ``expert`` high/low on a Wan2.1 set
(one DiT), and the reverse is the loader's (a CLIP vision choice on a Wan2.2 set). Anything it cannot resolve is left to ComfyUI's own validation.
"""
from __future__ import annotations

import json
import logging

from .common import watch_posts
from ..wan_engine.errors import InvalidInput
from ..wan_engine.lora import experts as lora_experts
from ..wan_engine.sample import experts

log = logging.getLogger("wanvolume")
SAMPLER, LORA, LOADER = "WanVolumeSampler", "WanVolumeLoraApply", "WanVolumeModelLoader"


def _upstream(prompt: dict, node_id: str) -> tuple[str | None, list[str]]:
    """The loader's model_set above ``node_id``'s pipe link, and the LoRA nodes on the way."""
    loras, seen = [], set()
    node = prompt.get(node_id, {})
    while isinstance(node, dict) and node_id not in seen:
        seen.add(node_id)
        link = node.get("inputs", {}).get("pipe")
        if not (isinstance(link, list) and link):
            return None, loras
        node_id = str(link[0])
        node = prompt.get(node_id, {})
        kind = node.get("class_type") if isinstance(node, dict) else None
        if kind == LORA:
            loras.append(node_id)
        elif kind == LOADER:
            name = node.get("inputs", {}).get("model_set")
            return (name if isinstance(name, str) else None), loras
        else:
            return None, loras
    return None, loras


def _wan22(name: str) -> bool | None:
    from .common import extra_set_dirs
    from ..wan_engine.store import find as volume

    found = {s.name: s for s in volume.find_model_sets(extra_set_dirs())}.get(name)
    return None if found is None else found.two_experts


def _value(v):
    return None if (v == 0 and not isinstance(v, bool)) or not isinstance(v, (int, float)) else v


def problems(prompt: dict) -> dict[str, tuple[str, InvalidInput]]:
    """node id -> (class type, the refusal) for every node whose inputs do not fit its set."""
    out: dict[str, tuple[str, InvalidInput]] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != SAMPLER:
            continue
        name, loras = _upstream(prompt, node_id)
        two = _wan22(name) if name else None
        if two is None:
            continue
        inputs = node.get("inputs", {})
        try:
            experts.check_family(two, _value(inputs.get("boundary", 0)), _value(inputs.get("cfg_low_noise", 0)), name)
        except InvalidInput as exc:
            out[node_id] = (SAMPLER, exc)
        for lora_id in loras:
            expert = prompt[lora_id].get("inputs", {}).get("expert", "both")
            try:
                if expert in lora_experts.EXPERT_CHOICES:      # other values: ComfyUI's own check
                    lora_experts.check_expert(expert, two)
            except InvalidInput as exc:
                out[lora_id] = (LORA, exc)
    return out


def response_body(found: dict[str, tuple[str, InvalidInput]]) -> dict:
    """ComfyUI's own shape for a prompt that failed validation."""
    errors = {node_id: {"errors": [{"type": "value_not_valid", "message": "Value not valid for the model set",
                                    "details": str(exc), "extra_info": {"input_name": exc.field,
                                                                        "received_value": exc.value}}],
                        "dependent_outputs": [], "class_type": kind}
              for node_id, (kind, exc) in found.items()}
    return {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "; ".join(str(e) for _, e in found.values()), "extra_info": {}},
            "node_errors": errors}


def install() -> None:
    from aiohttp import web

    def family_check(body):
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, dict):
            return None
        try:
            found = problems(prompt)
        except Exception:   # noqa: BLE001 - never block a prompt on our own bug: ComfyUI validates
            log.exception("WanVolume: the model-set family check failed")
            found = {}
        return web.json_response(response_body(found), status=400) if found else None

    watch_posts(("/prompt",), family_check)
