"""Through one real ComfyUI server: ComfyUI folders filled the ways users fill them (renamed
files, Kijai's WanVideo_comfy files with a bare-key DiT, hf download's split_files/ nesting,
a GGUF DiT in unet/) are each offered as a set, and each makes the diffusers layout's video:
the same frames, or within the stated GGUF bound.

Each way lies in its own models folder, handed to ComfyUI as a ``diffusers`` folder of
extra_model_paths.yaml: the pack scans those like a models dir (as ComfyUI's own ``models/``),
so each folder makes its own set and one server covers all four."""
from __future__ import annotations

import json

import numpy as np
import pytest

import layout_writers as lw
from comfy_headless import ComfyServer
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from test_server import run_video
from wan_engine import tiny_model, video
from wan_engine.tiny_model import build_components

pytestmark = pytest.mark.server

DIFFUSERS = "Wan2.1-I2V-tiny-spiece-Diffusers"
# The GGUF video through the server: H.264 frames (uint8), the workflow's LoRA on, 2 steps;
# measured max |diff| 0.094 / mean 0.0129 of full scale against the diffusers layout's video.
# Stated bound: max < 0.2 and mean < 0.02 (the same video mirrored differs by 0.063 mean).
VIDEO_TOL, VIDEO_MEAN_TOL = 0.2, 0.02
SETS = {"renamed": "comfy/my_wan_i2v_model", "kijai": "comfy/Wan2_1-I2V-14B-720P_bf16",
        "split": "comfy/wan2.1_i2v_720p_tiny_bf16", "gguf": "comfy/wan2.1-i2v-14b-720p-Q8_0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-found")
    comps = lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))
    vol = base / "volume"
    lw.write_diffusers(vol / DIFFUSERS, comps)
    tiny_model.ensure_demo_lora(vol)
    for style in SETS:
        lw.write_comfy_as(base / style, comps, style)
    folders = "\n".join(f"    {base / style}" for style in SETS)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"filled:\n  diffusers: |\n{folders}\n")
    srv = ComfyServer(base / "comfy", vol, extra_args=["--extra-model-paths-config", str(yaml)]).start()
    yield srv
    srv.stop()


def test_each_way_is_offered_and_makes_the_diffusers_video(server, tmp_path):
    spec = server.get_json("/object_info/WanVolumeModelLoader")["WanVolumeModelLoader"]["input"]["required"]
    options = spec["model_set"][1]["options"] if spec["model_set"][0] == "COMBO" else spec["model_set"][0]
    assert set(SETS.values()) | {DIFFUSERS} <= set(options), options
    tooltip = spec["model_set"][1]["tooltip"]
    assert "comfy/Wan2_1-I2V-14B-720P_bf16: Wan2_1-I2V-14B-720P_bf16 (ComfyUI files: umt5 umt5-xxl-enc-bf16" \
        in tooltip and "fp16 > bf16 > fp32" in tooltip, tooltip
    image = server.upload_image(REPO / "assets" / "two_people.png")
    workflow = next(p for p in API_WORKFLOWS if "720p" in p.stem)
    frames = {}
    for name in [DIFFUSERS, *SETS.values()]:
        wf = tiny_workflow(workflow, image)
        wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]["model_set"] = name
        frames[name] = video.read_frames(run_video(server, wf, tmp_path, f"{name.replace('/', '_')}.mp4"))
    want = frames[DIFFUSERS].astype(np.float64)
    assert want.std() > 1.0, "a real picture, not a constant"
    for style in ("renamed", "kijai", "split"):
        assert np.array_equal(frames[SETS[style]], frames[DIFFUSERS]), style
    diff = np.abs(frames[SETS["gguf"]] - want) / 255.0
    assert 0 < diff.max() < VIDEO_TOL and diff.mean() < VIDEO_MEAN_TOL, (diff.max(), diff.mean())
    other = np.abs(frames[SETS["gguf"]].astype(np.float64) - np.flip(want, axis=2)) / 255.0
    assert other.mean() > 2 * VIDEO_MEAN_TOL, "the bound must tell a different video apart"


def test_explicit_choice_offered_and_checked(server, tmp_path):
    """The loader lists the files that fit (names as ComfyUI shows them); choosing one that fits
    runs, one that does not is refused at /prompt naming the input and the files that would do."""
    spec = server.get_json("/object_info/WanVolumeModelLoader")["WanVolumeModelLoader"]["input"]
    umt5 = "split_files/text_encoders/umt5_xxl_fp16.safetensors"
    options = spec["optional"]["text_encoder"]
    options = options[1]["options"] if options[0] == "COMBO" else options[0]
    assert options[0] == "auto" and umt5 in options and lw.KIJAI["text_encoders"] in options, options
    image = server.upload_image(REPO / "assets" / "two_people.png")
    wf = tiny_workflow(next(p for p in API_WORKFLOWS if "720p" in p.stem), image)
    loader = wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]
    loader.update(model_set=SETS["split"], text_encoder=lw.KIJAI["text_encoders"])
    status, body = server.queue(wf)
    assert status == 400 and "fits the model set" in json.dumps(body["node_errors"]) \
        and umt5 in json.dumps(body["node_errors"]), body
    loader["text_encoder"] = umt5
    assert video.read_frames(run_video(server, wf, tmp_path, "chosen.mp4")).std() > 1.0
