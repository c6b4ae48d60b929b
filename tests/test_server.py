"""Through a real ComfyUI server: the shipped API workflows, /prompt -> /history -> /view."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from comfy_headless import outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, sampler_refusal, tiny_workflow
from wan_engine import tiny_model, video

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def image_name(comfy_server) -> str:
    return comfy_server.upload_image(REPO / "assets" / "two_people.png")


def run_video(server, wf, tmp_path, name="out.mp4"):
    entry = server.run(wf)
    items = outputs_of(entry, node_id(wf, "WanVolumeVideoCombine"))
    assert len(items) == 1 and items[0]["type"] == "output" and items[0]["filename"].endswith(".mp4")
    assert entry["outputs"][node_id(wf, "WanVolumeVideoCombine")]["animated"] == [True]
    path = tmp_path / name
    path.write_bytes(server.view(items[0]))
    return path


@pytest.mark.parametrize("workflow", API_WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_api_workflow_makes_mp4(comfy_server, image_name, workflow, tmp_path):
    wf = tiny_workflow(workflow, image_name, width=80, height=48, frames=9)
    path = run_video(comfy_server, wf, tmp_path)
    facts = video.probe(path)
    assert (facts.frames, facts.width, facts.height) == (9, 80, 48)
    assert facts.fps == pytest.approx(16.0)
    tags = video.read_metadata(path)
    assert "WanVolumeSampler" in tags["prompt"]


def test_lora_strength_changes_video_and_zero_equals_no_lora(comfy_server, image_name, tmp_path):
    wf = tiny_workflow(API_WORKFLOWS[0], image_name)
    lora_id, sampler_id = node_id(wf, "WanVolumeLoraApply"), node_id(wf, "WanVolumeSampler")
    frames = {}
    for strength in (1.0, 0.0):
        wf[lora_id]["inputs"]["strength"] = strength
        frames[strength] = video.read_frames(run_video(comfy_server, wf, tmp_path, f"s{strength}.mp4"))
    no_lora = copy.deepcopy(wf)
    no_lora[sampler_id]["inputs"]["pipe"] = no_lora[lora_id]["inputs"]["pipe"]
    del no_lora[lora_id]
    frames["none"] = video.read_frames(run_video(comfy_server, no_lora, tmp_path, "none.mp4"))
    assert np.abs(frames[1.0].astype(int) - frames[0.0].astype(int)).mean() > 1.0
    assert np.array_equal(frames[0.0], frames["none"])


def test_second_prompt_does_not_reload(comfy_server, image_name, tmp_path):
    wf = tiny_workflow(API_WORKFLOWS[0], image_name)
    sampler = node_id(wf, "WanVolumeSampler")
    run_video(comfy_server, wf, tmp_path, "a.mp4")
    before = len(re.findall(r"loaded model set ", comfy_server.log_path.read_text()))
    wf[sampler]["inputs"].update(seed=1234, prompt="two people laugh, then they engage in k144ing kissing.")
    run_video(comfy_server, wf, tmp_path, "b.mp4")
    after = len(re.findall(r"loaded model set ", comfy_server.log_path.read_text()))
    assert after == before


@pytest.mark.parametrize("field,value,fragment", [
    ("width", 100, "width = 100: must be a multiple of 16"),
    ("frames", 80, "frames = 80: must be 4k+1"),
])
def test_bad_value_is_http_400_with_node_error(comfy_server, image_name, field, value, fragment):
    errors = sampler_refusal(comfy_server, image_name, field, value)
    assert any(fragment in e["details"] and "Fix:" in e["details"] for e in errors)
    assert comfy_server.get_json("/system_stats")      # still serving


def test_missing_model_set_is_http_400_naming_dirs_and_fix(comfy_server, image_name, tiny_volume):
    wf = json_load(API_WORKFLOWS[0])
    wf[node_id(wf, "LoadImage")]["inputs"]["image"] = image_name
    status, body = comfy_server.queue(wf)          # auto: Wan2.1 I2V 480P; the tiny set names no resolution
    assert status == 400
    loader = node_id(wf, "WanVolumeModelLoader")
    details = " ".join(e["details"] for e in body["node_errors"][loader]["errors"])
    assert "model_set = 'auto: Wan2.1 I2V 480P'" in details and tiny_model.TINY_SET_NAME in details
    assert f"wanvolume.py preload --profile comfy-480p-bf16 --models-dir {tiny_volume}" in details


def test_dropdowns_list_the_volume(comfy_server):
    info = comfy_server.get_json("/object_info")
    sets = info["WanVolumeModelLoader"]["input"]["required"]["model_set"]
    loras = info["WanVolumeLoraApply"]["input"]["required"]["lora"]
    assert "Wan2.1-I2V-tiny-demo-Diffusers" in str(sets)
    assert "loras/tiny_kissing_style_lora.safetensors" in str(loras)
    assert info["WanVolumeSampler"]["category"] == "WanVolume"


def json_load(path):
    import json
    return json.loads(path.read_text())


def test_interrupt_stops_between_steps(comfy_server, image_name):
    import time

    wf = tiny_workflow(API_WORKFLOWS[0], image_name, steps=200, seed=99)
    status, body = comfy_server.queue(wf)
    assert status == 200
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + 120
    while "speed options: attention" not in comfy_server.log_path.read_text(errors="replace").rsplit("got prompt", 1)[-1]:
        assert time.monotonic() < deadline, "the denoising loop never started"   # logged as it starts
        time.sleep(0.05)
    comfy_server.request("/interrupt", b"", method="POST")
    entry = comfy_server.wait(prompt_id, timeout=300)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds
    assert node_id(wf, "WanVolumeVideoCombine") not in entry.get("outputs", {})
    log = comfy_server.log_path.read_text(errors="replace").rsplit("got prompt", 1)[-1]
    assert "sampled 200 steps" not in log        # it did not run to the last step


def test_unload_models_button_keeps_the_set_in_ram(comfy_server, image_name, tmp_path):
    """ComfyUI's "Unload models" (POST /free unload_models) moves the set to RAM like core models;
    the next prompt brings it back from there, without reading the volume again."""
    import json
    import time

    wf = tiny_workflow(API_WORKFLOWS[0], image_name, seed=4242)
    run_video(comfy_server, wf, tmp_path, "before.mp4")
    log = comfy_server.log_path
    kept = log.read_text().count("kept in RAM")
    loads = log.read_text().count("loaded model set ")
    deadline = time.monotonic() + 60
    while log.read_text().count("kept in RAM") == kept and time.monotonic() < deadline:
        # repeated: ComfyUI's worker misses a flag set while it runs its gc after a prompt
        status, _ = comfy_server.request("/free", json.dumps({"unload_models": True}).encode(),
                                         {"Content-Type": "application/json"})
        assert status == 200
        time.sleep(3)
    assert log.read_text().count("kept in RAM") > kept
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["seed"] = 4243
    run_video(comfy_server, wf, tmp_path, "after.mp4")   # works again, from RAM
    assert log.read_text().count("loaded model set ") == loads
