"""Through a real ComfyUI server: the shipped Wan2.2 workflows make videos on a tiny Wan2.2 set (each
expert's sampling phase in the run report, LoRAs per expert); with a memory cap that fits one expert
(WAN_VOLUME_VRAM_GB) ComfyUI holds one expert at a time and swaps them at the boundary; /prompt
refuses what does not fit the set's family, naming the node, field and fix; a set whose two
experts are one expert twice is refused naming the file."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

from comfy_headless import ComfyServer, outputs_of
from helpers import API_WORKFLOWS, REPO, TINY_DISTILL_LORA, TINY_LORA, WAN22_API_WORKFLOWS, node_id, tiny_workflow
from wan22_fixtures import DIFFUSERS_NAME, wan22_volumes  # noqa: F401 (fixture)

pytestmark = pytest.mark.server
TWIN = "comfy/wan2.2_i2v_{high,low}_noise_14B_fp16"
DAMAGED = "Wan2.2-I2V-damaged-Diffusers"
ORIGINAL = "Wan2.2-I2V-A14B-tiny"
# the workflows load bf16: experts 5.7 MiB each (with the LoRA adapters), working 0.1 MiB; an 8 MiB
# budget fits one expert with the sampling's working memory, not two
CAP_GB = str(8 / 1024)


@pytest.fixture(scope="module")
def server(tiny_volume, wan22_volumes, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-wan22")
    vol = base / "models"
    shutil.copytree(tiny_volume, vol)
    shutil.copytree(wan22_volumes / "diffusers" / DIFFUSERS_NAME, vol / DIFFUSERS_NAME)
    shutil.copytree(wan22_volumes / "comfy", vol, dirs_exist_ok=True)
    d = vol / "diffusion_models"        # one expert twice: the low file is a copy of the high one
    shutil.copy(d / "wan2.2_i2v_high_noise_14B_fp16.safetensors", d / "wan2.2_i2v_low_noise_14B_fp16.safetensors")
    damaged = vol / DAMAGED                 # the low-noise expert's shard cut short (an interrupted copy)
    shutil.copytree(wan22_volumes / "diffusers" / DIFFUSERS_NAME, damaged)
    shard = next((damaged / "transformer_2").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    shutil.copytree(wan22_volumes / "original", vol, dirs_exist_ok=True)       # ... without low_noise_model/
    shutil.rmtree(vol / ORIGINAL / "low_noise_model")
    srv = ComfyServer(base, vol, env={"WAN_VOLUME_VRAM_GB": CAP_GB}).start()
    srv.image = srv.upload_image(REPO / "assets" / "two_people.png")
    yield srv
    srv.stop()


def wan22_workflow(server, model_set: str = DIFFUSERS_NAME, **sampler) -> dict:
    """The shipped Wan2.1 480p API workflow pointed at a Wan2.2 set: no LoRA node, Wan's boundary."""
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


def shipped_on_tiny(server, path) -> dict:
    """A shipped Wan2.2 API workflow on the tiny Wan2.2 set: tiny LoRAs, a tiny video."""
    wf = json.loads(path.read_text())
    for node in wf.values():
        inputs = node["inputs"]
        if node["class_type"] == "WanVolumeModelLoader":
            # offload none: ComfyUI's memory manager places the parts (`auto` would plan for
            # 1280x720x81 under the cap, i.e. sequential offload)
            inputs.update(model_set=DIFFUSERS_NAME, offload="none")
        elif node["class_type"] == "WanVolumeLoraApply":
            inputs["lora"] = TINY_DISTILL_LORA if "lightning" in inputs["lora"] else TINY_LORA
        elif node["class_type"] == "LoadImage":
            inputs["image"] = server.image
        elif node["class_type"] == "WanVolumeSampler":
            inputs.update(width=64, height=48, frames=5, **({} if inputs["steps"] == 4 else {"steps": 2}))
    return wf


@pytest.mark.parametrize("path", WAN22_API_WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_wan22_workflow_runs_with_one_expert_at_a_time(server, path):
    before = server.log_path.read_text(errors="replace")
    wf = shipped_on_tiny(server, path)
    entry = server.run(wf)
    assert outputs_of(entry, node_id(wf, "WanVolumeVideoCombine")), server.log_tail()
    log = server.log_path.read_text(errors="replace")[len(before):]
    fast = path.stem.endswith("_fast")
    assert ("Wan2.2 high-noise expert: steps 1-2 of 4 (cfg 1)" if fast
            else "Wan2.2 high-noise expert: steps 1-1 of 2 (cfg 3.5)") in log
    assert "high-noise expert phase: ComfyUI holds transformer; " in log
    assert "low-noise expert phase: ComfyUI holds transformer_2; swapped out the high-noise expert" in log
    kissing = entry["outputs"]["3"]["wanvolume_lora"]          # node 3: the kissing LoRA, expert both
    assert [(r["expert"], r["no_target"]) for r in kissing] == [("high", 4), ("low", 4)]
    report = json.loads(sorted(server.base_dir.glob("output/**/*.json"), key=lambda p: p.stat().st_mtime)[-1].read_text())
    names = [p["name"] for p in report["phases"]]
    assert "sample_high" in names and "sample_low" in names
    assert report["settings"]["boundary"] == 0.9
    experts = [lo["expert"] for lo in report["settings"]["loras"]]
    assert experts == (["high", "low", "both"] if fast else ["both"])


def test_wan22_inputs_on_a_wan21_set_are_refused(server):
    wf = tiny_workflow(API_WORKFLOWS[0], server.image, boundary=0.9)
    errors = refused(server, wf)
    (err,) = errors[node_id(wf, "WanVolumeSampler")]["errors"]
    assert err["details"].startswith("boundary = 0.9: is a Wan2.2 input") and "Fix:" in err["details"]
    assert server.get_json("/object_info/WanVolumeSampler")           # still serving


def test_one_expert_lora_on_a_wan21_set_is_refused(server):
    wf = tiny_workflow(API_WORKFLOWS[0], server.image)
    wf[node_id(wf, "WanVolumeLoraApply")]["inputs"]["expert"] = "high"
    errors = refused(server, wf)
    (err,) = errors[node_id(wf, "WanVolumeLoraApply")]["errors"]
    assert err["details"].startswith("expert = 'high'") and "Wan2.1 set" in err["details"]


def test_one_expert_twice_is_refused_naming_the_file(server):
    errors = refused(server, wan22_workflow(server, TWIN))
    text = json.dumps(errors)
    assert "wan2.2_i2v_low_noise_14B_fp16.safetensors is the same weights as the high-noise expert" in text
    assert "wan22-comfy-fp8" in text


def test_a_damaged_low_expert_is_refused_naming_the_file(server):
    text = json.dumps(refused(server, wan22_workflow(server, DAMAGED)))
    assert f"{DAMAGED}/transformer_2/" in text and "damaged" in text and "Fix:" in text


def test_a_missing_low_expert_is_refused_naming_it_and_the_fetch(server):
    text = json.dumps(refused(server, wan22_workflow(server, ORIGINAL)))
    assert "low_noise_model/ (the low-noise expert; fetch: python wanvolume.py preload --profile wan22-i2v-a14b" in text
    status, _ = server.request("/object_info/WanVolumeModelLoader")
    assert status == 200                                            # the server keeps serving
