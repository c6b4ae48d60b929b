"""The run report through a real ComfyUI server (CPU): the shipped workflow with a price set, and a
bad price refused at /prompt while the server keeps serving."""
from __future__ import annotations

import json
import shutil

import pytest

from comfy_headless import ComfyServer, outputs_of, reports_of
from conftest import ARTIFACTS
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine import report, video

pytestmark = pytest.mark.server

PRICE = 2.5
EVERY_PHASE = ["load", "lora", "text_encode", "image_encode", "sample", "decode", "write"]


@pytest.fixture(scope="module")
def priced_server(tiny_volume, tmp_path_factory):
    server = ComfyServer(tmp_path_factory.mktemp("comfy_priced"), tiny_volume,
                         env={report.ENV_PRICE: str(PRICE)}).start()
    yield server
    server.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.log_path, ARTIFACTS / "comfyui-priced-server.log")


def test_the_shipped_workflow_reports_its_cost_everywhere(priced_server, tmp_path):
    server = priced_server
    image = server.upload_image(REPO / "assets" / "two_people.png")
    wf = tiny_workflow(API_WORKFLOWS[0], image, width=64, height=48, frames=5, steps=3)
    combine = node_id(wf, "WanVolumeVideoCombine")
    entry = server.run(wf)
    (item,) = outputs_of(entry, combine)
    (listed,) = reports_of(entry, combine)       # /history lists the report's file under `images`
    assert entry["outputs"][combine]["images"][0] == item   # the video first: the editor previews it
    assert listed["filename"] == item["filename"].replace(".mp4", ".json") and listed["type"] == "output"
    assert listed["format"] == "application/json"

    from_file = json.loads(server.view(listed))
    (from_ui,) = entry["outputs"][combine]["wanvolume_report"]
    path = tmp_path / item["filename"]
    path.write_bytes(server.view(item))
    from_mp4 = json.loads(video.read_metadata(path)["wanvolume_report"])
    assert from_file == from_ui == from_mp4
    assert from_file["video"] == item["filename"] and from_file["prompt_id"] == entry["prompt"][1]

    r = from_file
    assert [p["name"] for p in r["phases"]] == EVERY_PHASE
    total = sum(p["seconds"] for p in r["phases"])
    assert abs(total - r["seconds"]) <= 0.05 * r["seconds"], (total, r["seconds"], r["phases"])
    sample = next(p for p in r["phases"] if p["name"] == "sample")
    assert len(sample["step_seconds"]) == 3 and all(s > 0 for s in sample["step_seconds"])
    assert r["price_per_hour"] == PRICE and r["price_source"] == report.ENV_PRICE
    assert r["cost_usd"] == pytest.approx(r["seconds"] * PRICE / 3600, rel=1e-12)
    assert r["device"] == {"type": "cpu", "name": r["device"]["name"], "gpu_count": 0}
    assert all(p["peak_gpu_bytes"] is None for p in r["phases"]) and r["peak_gpu_bytes"] is None
    assert r["loaded_from_volume"] is True
    s = r["settings"]
    assert (s["width"], s["height"], s["frames"], s["steps"]) == (64, 48, 5, 3)
    assert s["loras"] and s["loras"][0]["strength"] == wf[node_id(wf, "WanVolumeLoraApply")]["inputs"]["strength"]
    assert s["precision"] and s["offload"] and s["attention"] and s["video"]["format"] == "h264-mp4"
    assert "plan" in r
    assert "run report: " in server.log_tail(200) and "cents at $2.5/h" in server.log_tail(200)

    # A second prompt with another seed reuses the set: its report says so and keeps its own phases.
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["seed"] += 1
    again = server.run(wf)
    (second,) = again["outputs"][combine]["wanvolume_report"]
    assert second["loaded_from_volume"] is False and second["prompt_id"] != r["prompt_id"]
    # (loader and LoRA node cached: "load" is the sampler's reuse, "lora" the sampler's activation)
    assert [p["name"] for p in second["phases"]] == EVERY_PHASE
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "run_report_first.json").write_text(json.dumps(r, indent=2))
    (ARTIFACTS / "run_report_second.json").write_text(json.dumps(second, indent=2))


@pytest.mark.parametrize("bad", ["two dollars", "-1"])
def test_a_bad_price_is_refused_and_the_server_keeps_serving(tiny_volume, tmp_path_factory, bad):
    server = ComfyServer(tmp_path_factory.mktemp("comfy_bad_price"), tiny_volume,
                         env={report.ENV_PRICE: bad}).start()
    try:
        image = server.upload_image(REPO / "assets" / "two_people.png")
        wf = tiny_workflow(API_WORKFLOWS[0], image)
        status, body = server.queue(wf)
        text = json.dumps(body, ensure_ascii=False)
        assert status == 400, text[:1000]
        assert f"{report.ENV_PRICE} = {bad!r}" in text and "Fix: set " + report.ENV_PRICE in text
        assert server.get_json("/system_stats")["system"]            # still serving
        out = server.base_dir / "output"
        assert [p for p in out.rglob("*") if p.is_file()] == []       # no video, no report, no part file
    finally:
        server.stop()
