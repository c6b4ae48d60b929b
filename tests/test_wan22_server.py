"""Through a real ComfyUI server: a Wan2.2 set makes a video with its two experts (each expert's
sampling phase in the run report), and /prompt refuses what does not fit the set's family, naming
the node, field and fix; a set whose two experts are one expert twice is refused naming the file."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

from comfy_headless import ComfyServer, outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan22_fixtures import DIFFUSERS_NAME, wan22_volumes  # noqa: F401 (fixture)

pytestmark = pytest.mark.server
TWIN = "comfy/wan2.2_i2v_{high,low}_noise_14B_fp16"


@pytest.fixture(scope="module")
def server(tiny_volume, wan22_volumes, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-wan22")
    vol = base / "models"
    shutil.copytree(tiny_volume, vol)
    shutil.copytree(wan22_volumes / "diffusers" / DIFFUSERS_NAME, vol / DIFFUSERS_NAME)
    shutil.copytree(wan22_volumes / "comfy", vol, dirs_exist_ok=True)
    d = vol / "diffusion_models"        # one expert twice: the low file is a copy of the high one
    shutil.copy(d / "wan2.2_i2v_high_noise_14B_fp16.safetensors", d / "wan2.2_i2v_low_noise_14B_fp16.safetensors")
    srv = ComfyServer(base, vol).start()
    srv.image = srv.upload_image(REPO / "assets" / "two_people.png")
    yield srv
    srv.stop()


def wan22_workflow(server, model_set: str = DIFFUSERS_NAME, **sampler) -> dict:
    """The shipped 480p API workflow on a Wan2.2 set: the LoRA node left out, Wan's boundary."""
    wf = tiny_workflow(API_WORKFLOWS[0], server.image, boundary=0.9, cfg_low_noise=3.0, steps=4, cfg=5.0,
                       shift=5.0, **sampler)      # 4 UniPC steps at shift 5: t = 999, 937 | 833, 625
    lora = node_id(wf, "WanVolumeLoraApply")
    loader = node_id(wf, "WanVolumeModelLoader")
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["pipe"] = wf[lora]["inputs"]["pipe"]
    del wf[lora]
    wf[loader]["inputs"]["model_set"] = model_set
    return wf


def refused(server, wf: dict) -> dict:
    status, body = server.queue(wf)
    assert status == 400, body
    return body["node_errors"]


def test_wan22_set_makes_a_video_with_both_experts(server):
    wf = wan22_workflow(server)
    entry = server.run(wf)
    assert outputs_of(entry, node_id(wf, "WanVolumeVideoCombine")), server.log_tail()
    log = server.log_path.read_text(errors="replace")
    assert "Wan2.2 high-noise expert: steps 1-2 of 4 (cfg 5)" in log
    assert "Wan2.2 low-noise expert: steps 3-4 of 4 (cfg 3)" in log
    report = json.loads(next(server.base_dir.glob("output/**/*.json")).read_text())
    names = [p["name"] for p in report["phases"]]
    assert "sample_high" in names and "sample_low" in names
    assert report["settings"]["boundary"] == 0.9 and report["settings"]["cfg_low_noise"] == 3.0


def test_wan22_inputs_on_a_wan21_set_are_refused(server):
    wf = tiny_workflow(API_WORKFLOWS[0], server.image, boundary=0.9)
    errors = refused(server, wf)
    (err,) = errors[node_id(wf, "WanVolumeSampler")]["errors"]
    assert err["details"].startswith("boundary = 0.9: is a Wan2.2 input") and "Fix:" in err["details"]
    assert server.get_json("/object_info/WanVolumeSampler")           # still serving


def test_a_lora_on_a_wan22_set_is_refused(server):
    wf = tiny_workflow(API_WORKFLOWS[0], server.image, boundary=0.9)
    wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]["model_set"] = DIFFUSERS_NAME
    errors = refused(server, wf)
    (err,) = errors[node_id(wf, "WanVolumeLoraApply")]["errors"]
    assert err["details"].startswith("lora = ") and "Wan2.2 set (two experts)" in err["details"]


def test_one_expert_twice_is_refused_naming_the_file(server):
    errors = refused(server, wan22_workflow(server, TWIN))
    text = json.dumps(errors)
    assert "wan2.2_i2v_low_noise_14B_fp16.safetensors is the same weights as the high-noise expert" in text
    assert "wan22-comfy-fp8" in text
