"""The workflow in the MP4: on by default, off by the node's toggle and by ComfyUI's --disable-metadata."""
from __future__ import annotations

import json
import os

import pytest

from comfy_headless import ComfyServer, outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine import video

pytestmark = pytest.mark.server
UI = REPO / "workflows" / f"{API_WORKFLOWS[0].stem}.json"


def make_mp4(server, tmp_path, embed: bool, name: str):
    image = server.upload_image(REPO / "assets" / "two_people.png")
    # A seed no other test uses: ComfyUI would otherwise serve a cached Video Combine result
    # (written by an earlier test without extra_pnginfo) instead of running it again.
    wf = tiny_workflow(API_WORKFLOWS[0], image, seed=int.from_bytes(os.urandom(6), "little"))
    combine = node_id(wf, "WanVolumeVideoCombine")
    wf[combine]["inputs"]["embed_workflow"] = embed
    ui = json.loads(UI.read_text())
    status, body = server.queue(wf, extra_data={"extra_pnginfo": {"workflow": ui}})
    assert status == 200, body
    (item,) = outputs_of(server.wait(body["prompt_id"]), combine)
    path = tmp_path / name
    path.write_bytes(server.view(item))
    return path, wf, ui


def test_workflow_and_prompt_embedded_by_default(comfy_server, tmp_path):
    path, wf, ui = make_mp4(comfy_server, tmp_path, True, "on.mp4")
    tags = video.read_metadata(path)
    assert json.loads(tags["workflow"]) == ui
    prompt = json.loads(tags["prompt"])
    assert {k: (n["class_type"], n["inputs"]) for k, n in prompt.items()} == \
        {k: (n["class_type"], n["inputs"]) for k, n in wf.items()}


def test_toggle_off_embeds_nothing(comfy_server, tmp_path):
    path, _, _ = make_mp4(comfy_server, tmp_path, False, "off.mp4")
    tags = video.read_metadata(path)
    assert "workflow" not in tags and "prompt" not in tags
    assert json.loads(tags["wanvolume_report"])["seconds"] > 0   # the toggle is about the workflow only
    assert video.probe(path).frames == 5          # still a good video


def test_disable_metadata_server_embeds_nothing(tiny_volume, tmp_path_factory, tmp_path):
    server = ComfyServer(tmp_path_factory.mktemp("comfy-nometa"), tiny_volume,
                         extra_args=["--disable-metadata"]).start()
    try:
        path, _, _ = make_mp4(server, tmp_path, True, "nometa.mp4")
    finally:
        server.stop()
    tags = video.read_metadata(path)
    assert "workflow" not in tags and "prompt" not in tags and "wanvolume_report" not in tags
