"""The phases as a real ComfyUI server (CPU) sees them: which of our components its memory manager
holds as each phase starts (its ``current_loaded_models``, logged by the phase hook), with a small
plan forced by WAN_VOLUME_VRAM_GB, and everything kept with a roomy one."""
from __future__ import annotations

import re

import pytest

from comfy_headless import ComfyServer
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow

pytestmark = pytest.mark.server
HELD = re.compile(r"Wan phase (\w+) \(plan (\w+)\): ComfyUI holds ([^;]*); moved to RAM: (.*)")


@pytest.fixture(scope="module")
def small_server(tiny_volume, tmp_path_factory):
    server = ComfyServer(tmp_path_factory.mktemp("comfy-plan"), tiny_volume,
                         env={"WAN_VOLUME_VRAM_GB": "0.15"}).start()
    yield server
    server.stop()


def phases_seen(server, since: int) -> list[tuple[str, str, list[str], str]]:
    text = server.log_path.read_text(errors="replace")[since:]
    return [(m[1], m[2], sorted(m[3].split(", ")), m[4].strip()) for m in HELD.finditer(text)]


def run(server, offload: str) -> list:
    image = server.upload_image(REPO / "assets" / "two_people.png")
    wf = tiny_workflow(API_WORKFLOWS[0], image)
    wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]["offload"] = offload
    since = len(server.log_path.read_text(errors="replace"))
    entry = server.run(wf)
    assert entry["status"]["status_str"] == "success", server.log_tail()
    return phases_seen(server, since)


def test_small_plan_moves_the_encoders_out_before_sampling(small_server):
    seen = run(small_server, "none")
    assert [s[0] for s in seen] == ["text_encode", "image_encode", "sample", "decode"], seen
    by = {s[0]: s for s in seen}
    assert all(s[1] == "swap" for s in seen)
    # the tiny umT5's working memory does not fit beside it at this cap: the calibrated plan computes
    # it on the CPU (as on a 12 GB card), so ComfyUI holds none of our parts while the text is encoded
    assert by["text_encode"][2] == ["none of ours"]          # as the log line words it
    assert {"image_encoder", "vae"} <= set(by["image_encode"][2])
    assert by["sample"][2] == ["transformer"]                     # what ComfyUI holds while sampling
    assert "text_encoder" in by["sample"][3] and "image_encoder" in by["sample"][3]
    assert "vae" in by["decode"][2]
    plan = small_server.get_json("/wan_volume/status")["memory_plan"]      # what the loader badge shows
    assert plan["mode"] == "swap" and plan["summary"].startswith("plan swap")


def test_roomy_plan_keeps_every_component(comfy_server):
    seen = run(comfy_server, "auto")
    assert seen and all(s[1] == "resident" for s in seen)
    assert all(s[2] == ["image_encoder", "text_encoder", "transformer", "vae"] for s in seen)
