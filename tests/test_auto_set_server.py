"""Through one real ComfyUI server: a shipped API workflow with its model_set ("auto: Wan2.1 I2V
720P") and its LoRA names as shipped runs on a tiny volume in the layout the recommended profiles
give (comfy-720p-bf16 + kissing-lora + distill-lora-720p: ComfyUI's folders, the LoRAs in their
profile folders). Only the photo and the video size (a 14B-sized 1280x720x81 video is minutes of
CPU per step even for the tiny model) are changed. The server log, the run report and the status
document (the loader badge) name the set the auto value picked."""
from __future__ import annotations

import json
import shutil

import pytest

import layout_writers as lw
from comfy_headless import ComfyServer, outputs_of
from helpers import REPO, node_id
from wan_engine import tiny_model, video
from wan_engine.store import auto_set, profiles
from wan_engine.tiny_model import build_components

pytestmark = pytest.mark.server

WORKFLOW = REPO / "workflows" / "api" / "kiss_i2v_720p_fast.json"
PICKED = "comfy/wan2.1_i2v_720p_tiny_bf16"
KISSING = "kissing-lora/kissing_30_epochs.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("auto-set")
    vol = base / "volume"
    comps = lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))
    lw.write_comfy(vol, comps, ("bf16",))
    spare = base / "spare"
    for made, name in ((tiny_model.ensure_demo_lora(spare), KISSING),
                       (tiny_model.ensure_demo_distill_lora(spare), profiles.distill_lora_name("720p"))):
        (vol / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(made, vol / name)
    srv = ComfyServer(base / "comfy", vol).start()
    yield srv
    srv.stop()


def test_the_shipped_fast_workflow_runs_with_its_own_names(server, tmp_path):
    wf = json.loads(WORKFLOW.read_text())
    loader = wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]
    assert loader["model_set"] == auto_set.VALUES[0]
    assert [n["inputs"]["lora"] for n in wf.values() if n["class_type"] == "WanVolumeLoraApply"] == [
        profiles.distill_lora_name("720p"), KISSING]
    wf[node_id(wf, "LoadImage")]["inputs"]["image"] = server.upload_image(REPO / "assets" / "two_people.png")
    wf[node_id(wf, "WanVolumeSampler")]["inputs"].update(width=64, height=48, frames=5)
    combine = node_id(wf, "WanVolumeVideoCombine")
    entry = server.run(wf)
    (item,) = outputs_of(entry, combine)
    path = tmp_path / "auto.mp4"
    path.write_bytes(server.view(item))
    facts = video.probe(path)
    assert (facts.frames, facts.width, facts.height) == (5, 64, 48)
    assert video.read_frames(path).std() > 1.0, "a real picture, not a constant"
    (report,) = entry["outputs"][combine]["wanvolume_report"]
    assert report["settings"]["model_set"] == PICKED
    assert report["settings"]["model_set_asked"] == auto_set.VALUES[0]
    assert f"model_set {auto_set.VALUES[0]} -> {PICKED} (rule: {auto_set.RULE})" in server.log_tail(400)
    auto = {a["value"]: a for a in server.get_json("/wan_volume/status")["auto"]}
    assert auto[auto_set.VALUES[0]]["set"] == PICKED
    assert auto[auto_set.VALUES[1]] == {"value": auto_set.VALUES[1], "set": None,
                                        "command": profiles.preload_command("comfy-480p-bf16", server.models_dir)}


def test_a_480p_workflow_is_refused_naming_what_to_fetch(server):
    wf = json.loads((REPO / "workflows" / "api" / "kiss_i2v_480p.json").read_text())
    status, body = server.queue(wf)
    assert status == 400, body
    loader = node_id(wf, "WanVolumeModelLoader")
    details = " ".join(e["details"] for e in body["node_errors"][loader]["errors"])
    assert f"model_set = '{auto_set.VALUES[1]}': no complete Wan2.1 I2V 480P set" in details
    assert PICKED in details and "preload --profile comfy-480p-bf16" in details
