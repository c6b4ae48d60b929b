"""Through a real ComfyUI server: a LoRA with full deltas gives the video of the merged model.

The LoRA (tests/lora_builders.py) carries what step-distill LoRAs carry: ``lora_down``/``lora_up``
with alpha != rank on the blocks' Linear layers, ``.diff`` on every other weight (norms with the
norm2/norm3 swap, modulation, head, embeddings, patch_embedding) and ``.diff_b`` on every bias.
The reference is a second diffusers-layout set holding the tiny model with those deltas merged
into its weights by hand (ComfyUI's rules); both run through /prompt, the frames are compared.
"""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
from safetensors.torch import save_file

from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from lora_builders import distill_style_lora, merge_by_hand
from wan_engine import tiny_model, video
from test_server import run_video

pytestmark = pytest.mark.server

LORA = "loras/zz_delta_test_distill_lora.safetensors"
MERGED = "Wan2.1-I2V-tiny-zz-merged-Diffusers"
STRENGTH = 0.8
# Decoded lossless (crf 0) mp4 frames, uint8, of the LoRA run vs the merged model, both fp32.
# Measured: max 2 levels, mean 0.0001 (3 of 46,080 values off by 2; the LoRA itself moves the
# mean by 19 levels). With crf 19 the codec spreads those flips: max 13, mean 0.013.
MAX_LEVELS, MEAN_LEVELS = 3, 0.01


@pytest.fixture(scope="module")
def delta_volume(tiny_volume):
    from diffusers import WanTransformer3DModel

    src = tiny_volume / tiny_model.TINY_SET_NAME
    base = WanTransformer3DModel.from_pretrained(str(src / "transformer"))
    sd = distill_style_lora(base, seed=61)
    save_file(sd, str(tiny_volume / LORA))
    merged_root = tiny_volume / MERGED
    shutil.copytree(src, merged_root)
    shutil.rmtree(merged_root / "transformer")
    merge_by_hand(base, sd, STRENGTH).save_pretrained(str(merged_root / "transformer"),
                                                      safe_serialization=True)
    yield tiny_volume
    (tiny_volume / LORA).unlink(missing_ok=True)
    shutil.rmtree(merged_root, ignore_errors=True)


@pytest.fixture(scope="module")
def image_name(comfy_server) -> str:
    return comfy_server.upload_image(REPO / "assets" / "two_people.png")


def test_lora_with_diff_keys_gives_the_merged_models_video(comfy_server, delta_volume, image_name, tmp_path):
    wf = tiny_workflow(API_WORKFLOWS[0], image_name)
    loader, lora_id, sampler = (node_id(wf, c) for c in ("WanVolumeModelLoader", "WanVolumeLoraApply",
                                                        "WanVolumeSampler"))
    wf[loader]["inputs"]["precision"] = "fp32"
    wf[node_id(wf, "WanVolumeVideoCombine")]["inputs"]["crf"] = 0     # lossless: compare frames, not codec
    wf[lora_id]["inputs"].update(lora=LORA, strength=STRENGTH)
    with_lora = video.read_frames(run_video(comfy_server, wf, tmp_path, "lora.mp4"))

    merged = copy.deepcopy(wf)
    merged[loader]["inputs"]["model_set"] = MERGED
    merged[sampler]["inputs"]["pipe"] = merged[lora_id]["inputs"]["pipe"]
    del merged[lora_id]
    reference = video.read_frames(run_video(comfy_server, merged, tmp_path, "merged.mp4"))

    wf[loader]["inputs"]["model_set"] = tiny_model.TINY_SET_NAME
    wf[lora_id]["inputs"]["strength"] = 0.0
    base = video.read_frames(run_video(comfy_server, wf, tmp_path, "base.mp4"))

    diff = np.abs(with_lora.astype(int) - reference.astype(int))
    effect = np.abs(with_lora.astype(int) - base.astype(int)).mean()
    off = float((diff > 1).mean())
    facts = (f"LoRA vs merged: max {diff.max()}, mean {diff.mean():.4f}, {off:.5f} of values off by > 1; "
             f"LoRA effect mean {effect:.2f}")
    assert effect > 5, facts
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, facts


def test_fuse_lora_switch_gives_the_unfused_video(comfy_server, delta_volume, image_name, tmp_path):
    spec = comfy_server.get_json("/object_info/WanVolumeLoraApply")["WanVolumeLoraApply"]["input"]
    assert spec["optional"]["fuse_lora"][1]["default"] is False
    wf = tiny_workflow(API_WORKFLOWS[0], image_name)
    lora_id = node_id(wf, "WanVolumeLoraApply")
    wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]["precision"] = "fp32"
    wf[node_id(wf, "WanVolumeVideoCombine")]["inputs"]["crf"] = 0
    wf[lora_id]["inputs"].update(lora=LORA, strength=STRENGTH)
    got = {}
    for fuse in (False, True):
        wf[lora_id]["inputs"]["fuse_lora"] = fuse
        got[fuse] = video.read_frames(run_video(comfy_server, wf, tmp_path, f"fuse{fuse}.mp4"))
    diff = np.abs(got[True].astype(int) - got[False].astype(int))
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())
