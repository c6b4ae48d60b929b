"""Through a real ComfyUI server: the same inputs give the same video whatever ran before.

One server of its own, so its first prompt really is the first after a load: prompt A on the
fresh server, then prompts that change the seed, the size, the tiles, the LoRA strength and the
offload, then A again on the now resident pipeline. The frames must be identical (crf 0).
A decodes in 64 px tiles at 128x96, so a VAE left tiled by a decode would also encode A's start
image tiled (diffusers' Wan VAE tiles any encode larger than the tile) and change the video.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from comfy_headless import ComfyServer, outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine import video

pytestmark = pytest.mark.server
WORKFLOW = next(p for p in API_WORKFLOWS if p.stem == "kiss_i2v_720p")
A = dict(width=128, height=96, frames=5, steps=2, seed=11, tile_size=64, tile_overlap=32)


@pytest.fixture(scope="module")
def server(tiny_volume, tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy-fresh"), tiny_volume).start()
    yield srv
    srv.stop()


def workflow(image: str, sampler: dict | None = None, **nodes: dict) -> dict:
    wf = tiny_workflow(WORKFLOW, image, **(A | (sampler or {})))
    wf[node_id(wf, "WanVolumeVideoCombine")]["inputs"]["crf"] = 0
    for class_type, inputs in nodes.items():
        wf[node_id(wf, class_type)]["inputs"].update(inputs)
    return wf


def frames_of(server: ComfyServer, wf: dict, tmp_path, name: str) -> np.ndarray:
    runs = len(re.findall(r"sampled \d+ steps", server.log_path.read_text(errors="replace")))
    entry = server.run(wf)
    (item,) = outputs_of(entry, node_id(wf, "WanVolumeVideoCombine"))
    assert len(re.findall(r"sampled \d+ steps", server.log_path.read_text(errors="replace"))) == runs + 1
    path = tmp_path / name
    path.write_bytes(server.view(item))
    return video.read_frames(path)


def test_same_prompt_same_video_on_a_fresh_and_a_resident_server(server, tmp_path):
    image = server.upload_image(REPO / "assets" / "two_people.png")
    fresh = frames_of(server, workflow(image), tmp_path, "a_fresh.mp4")
    others = {
        "offload": workflow(image, WanVolumeModelLoader={"offload": "model"}),
        "seed": workflow(image, {"seed": 12}),
        "size": workflow(image, {"width": 96, "height": 64}),
        "tiles": workflow(image, {"tile_size": 96, "tile_overlap": 48}),
        "whole": workflow(image, {"tiled_decode": False, "seed": 13}),
        "lora": workflow(image, WanVolumeLoraApply={"strength": 0.5}),
    }
    seen = {}
    for name, wf in others.items():
        seen[name] = frames_of(server, wf, tmp_path, f"{name}.mp4")
    resident = frames_of(server, workflow(image), tmp_path, "a_resident.mp4")
    assert fresh.shape == (5, 96, 128, 3)
    assert not np.array_equal(seen["seed"], fresh)          # the other prompts really differ
    assert not np.array_equal(seen["lora"], fresh)
    diff = np.abs(resident.astype(int) - fresh.astype(int))
    assert diff.max() == 0, f"A differs after other prompts by up to {diff.max()} levels"
