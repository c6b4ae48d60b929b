"""The shipped workflows: each UI file and its API twin describe the same graph and values."""
from __future__ import annotations

import json

import pytest

from helpers import REPO
from workflow_convert import ui_to_api

UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def load(path):
    return json.loads(path.read_text())


def test_every_ui_workflow_has_an_api_twin():
    assert [p.stem for p in UI_WORKFLOWS] == ["kiss_i2v_480p", "kiss_i2v_480p_fast", "kiss_i2v_720p",
                                              "kiss_i2v_720p_fast", "wan22_kiss_i2v_720p",
                                              "wan22_kiss_i2v_720p_fast"]
    for p in UI_WORKFLOWS:
        assert (REPO / "workflows" / "api" / p.name).is_file()


@pytest.mark.server
@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_and_api_describe_the_same_graph(comfy_server, path):
    info = comfy_server.get_json("/object_info")
    api = {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
           for k, v in load(REPO / "workflows" / "api" / path.name).items()}
    assert ui_to_api(load(path), info) == api


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_links_are_consistent(path):
    ui = load(path)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, typ in ui["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        target = nodes[dst]["inputs"][dst_slot]
        assert target["link"] == link_id and target["type"] == typ
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])
    assert ui["last_node_id"] == max(nodes)


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_presets_follow_the_model_card(path):
    api = load(REPO / "workflows" / "api" / path.name)
    by_type = {n["class_type"]: n["inputs"] for n in api.values()}
    s = by_type["WanVolumeSampler"]
    assert s["prompt"].rstrip(".").endswith("k144ing kissing")
    loras = [n["inputs"] for n in api.values() if n["class_type"] == "WanVolumeLoraApply"]
    assert all(lo["strength"] == 1.0 for lo in loras)
    assert by_type["WanVolumeVideoCombine"]["fps"] == 16.0
    assert (s["frames"] - 1) % 4 == 0 and s["width"] % 16 == 0 and s["height"] % 16 == 0
    res = path.stem.removeprefix("wan22_").split("_")[2]
    size = {"720p": (1280, 720), "480p": (832, 480)}[res]
    note = next(n for n in load(path)["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "k144ing kissing" in note
    if path.stem.startswith("wan22_"):
        wan22_preset(path.stem, s, loras, note)
    elif path.stem.endswith("_fast"):
        assert (s["steps"], s["cfg"], s["sampler"], s["schedule"], s["shift"]) == (4, 1.0, "euler",
                                                                                  "distill_4step", 5.0)
        assert [lo["lora"].split("/")[0] for lo in loras] == [f"distill-lora-{res}", "kissing-lora"]
        assert "Use the full workflow" in note and f"--profile distill-lora-{res}" in note
    else:
        assert (s["steps"], s["cfg"], s["sampler"], s["schedule"]) == (40, 6.0, "unipc", "auto")
        assert s["shift"] == {"720p": 5.0, "480p": 3.0}[res] and len(loras) == 1
    assert (s["width"], s["height"]) == size


def wan22_preset(stem: str, s: dict, loras: list[dict], note: str) -> None:
    """Wan's I2V A14B config (quality) and Lightning (fast); the kissing LoRA on both experts."""
    assert (s["boundary"], s["shift"]) == (0.9, 5.0) and loras[-1]["expert"] == "both"
    if stem.endswith("_fast"):
        assert (s["steps"], s["cfg"], s["cfg_low_noise"], s["sampler"]) == (4, 1.0, 1.0, "euler")
        assert [(lo["lora"].split("/")[-1], lo["expert"]) for lo in loras[:2]] == [
            ("high_noise_model.safetensors", "high"), ("low_noise_model.safetensors", "low")]
        assert "--profile wan22-lightning-lora" in note
    else:
        assert (s["steps"], s["cfg"], s["cfg_low_noise"], s["sampler"]) == (40, 3.5, 3.5, "unipc")
        assert len(loras) == 1
    assert "--profile wan22-i2v-a14b-diffusers" in note and "--profile kissing-lora" in note


def test_fast_workflow_chains_distill_then_kissing_lora():
    api = load(REPO / "workflows" / "api" / "kiss_i2v_720p_fast.json")
    sampler = next(n for n in api.values() if n["class_type"] == "WanVolumeSampler")
    kissing = api[sampler["inputs"]["pipe"][0]]
    distill = api[kissing["inputs"]["pipe"][0]]
    loader = api[distill["inputs"]["pipe"][0]]
    assert "kissing" in kissing["inputs"]["lora"] and "distill" in distill["inputs"]["lora"]
    assert loader["class_type"] == "WanVolumeModelLoader"


@pytest.mark.server
def test_template_browser_lists_the_ui_workflows(comfy_server):
    templates = comfy_server.get_json("/api/workflow_templates")
    assert sorted(templates["ComfyUI-WanVolume"]) == ["kiss_i2v_480p", "kiss_i2v_480p_fast",
                                                      "kiss_i2v_720p", "kiss_i2v_720p_fast",
                                                      "wan22_kiss_i2v_720p", "wan22_kiss_i2v_720p_fast"]
    status, body = comfy_server.request("/api/workflow_templates/ComfyUI-WanVolume/kiss_i2v_720p.json")
    assert status == 200 and json.loads(body) == load(REPO / "workflows" / "kiss_i2v_720p.json")
