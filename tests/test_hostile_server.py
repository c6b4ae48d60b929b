"""Issue 24 on a real ComfyUI server: a volume with a link loop, a FIFO and a dangling link named
like LoRAs, and a set a killed preload left; then inputs that used to take the server down.

The pack's nodes stay listed, /wan_volume/status answers, nothing hangs; the unfinished set is not
offered and a prompt naming it is refused at /prompt with the command that resumes it; a 1 x 4000
px strip at 832 x 480 with fit=crop makes a video; a 10 MB LoRA name gets a small answer and
little log; width=10**400 names the field; a 100,000-deep body to the preload route is a 400.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from comfy_headless import ComfyServer, outputs_of
from helpers import REPO, TINY_LORA, node_id, tiny_workflow
from wan_engine import tiny_model, video
from wan_engine.store import auto_set, manifest as mf

pytestmark = pytest.mark.server
WORKFLOW = REPO / "workflows" / "api" / "kiss_i2v_480p.json"
UNFINISHED = "Wan-Unfinished-Diffusers"
ENCODER = "image_encoder/model.safetensors"


def leave_killed_preload(vol: Path) -> None:
    """What a preload killed mid-way leaves: files, a manifest without marker, a .part file."""
    root = vol / UNFINISHED
    shutil.copytree(vol / tiny_model.TINY_SET_NAME, root)
    (root / ENCODER).rename(root / f"{ENCODER}.part")
    entry = mf.ManifestEntry(f"{UNFINISHED}/model_index.json", (root / "model_index.json").stat().st_size,
                             mf.file_sha256(root / "model_index.json"), "acme/x", "c" * 40)
    mf.save_manifest(vol, mf.Manifest(UNFINISHED, [mf.SourcePin("acme/x", "main", "c" * 40)],
                                      {entry.relpath: entry}))


@pytest.fixture(scope="module")
def vol(tiny_volume_template: Path, tmp_path_factory) -> Path:
    vol = tmp_path_factory.mktemp("hostile") / "models"
    shutil.copytree(tiny_volume_template, vol)
    os.symlink(".", vol / "models")                                   # a link loop
    os.mkfifo(vol / "loras" / "x.safetensors")                        # blocks whoever opens it
    os.symlink(vol / "loras" / "gone.safetensors", vol / "loras" / "dangling.safetensors")
    leave_killed_preload(vol)
    return vol


@pytest.fixture(scope="module")
def server(vol: Path, tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy-hostile"), vol,
                      env={"WAN_VOLUME_ALLOW_PRELOAD": "1"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def image(server) -> str:
    return server.upload_image(REPO / "assets" / "two_people.png")


def options(info: dict, node: str, name: str) -> list[str]:
    spec = info[node]["input"]["required"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_nodes_listed_status_answers_nothing_unfinished_offered(server, vol):
    info = server.get_json("/object_info")
    assert options(info, "WanVolumeModelLoader", "model_set") == [*auto_set.VALUES, tiny_model.TINY_SET_NAME]
    loras = options(info, "WanVolumeLoraApply", "lora")
    assert TINY_LORA in loras and not [n for n in loras if "x.safetensors" in n or "dangling" in n]
    doc = server.get_json("/wan_volume/status")
    sets = {s["name"]: s for s in doc["model_sets"]}
    assert sets[tiny_model.TINY_SET_NAME]["complete"] and doc["ready"]
    assert not sets[UNFINISHED]["complete"] and "not finished" in sets[UNFINISHED]["unfinished"]
    assert "--repo acme/x" in sets[UNFINISHED]["resume"]
    assert server.get_json("/system_stats")["system"]
    log = server.log_path.read_text(errors="replace")
    assert "1 complete set(s)" in log and "pre-load(s) not finished" in log


def test_prompt_on_unfinished_set_is_refused_with_resume_command(server, image):
    wf = tiny_workflow(WORKFLOW, image)
    loader = node_id(wf, "WanVolumeModelLoader")
    wf[loader]["inputs"]["model_set"] = UNFINISHED
    status, body = server.queue(wf)
    assert status == 400
    details = " | ".join(e["details"] for e in body["node_errors"][loader]["errors"])
    assert "model_set = " in details and "not finished" in details
    assert "preload --repo acme/x" in details


def test_strip_image_at_832x480_makes_a_video(server, tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 4000), (200, 120, 90)).save(strip)
    wf = tiny_workflow(WORKFLOW, server.upload_image(strip), width=832, height=480, fit="crop",
                       frames=1, steps=1, cfg=1.0)      # the size; one frame, one step
    wf[node_id(wf, "WanVolumeVideoCombine")]["inputs"]["filename_prefix"] = "hostile/strip"
    entry = server.run(wf)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    assert outputs_of(entry, node_id(wf, "WanVolumeVideoCombine"))


def test_huge_lora_name_gets_a_bounded_answer_and_log(server, image):
    wf = tiny_workflow(WORKFLOW, image)
    lora = node_id(wf, "WanVolumeLoraApply")
    wf[lora]["inputs"]["lora"] = "loras/" + "a" * 10_000_000 + ".safetensors"
    before = server.log_path.stat().st_size
    status, raw = server.request("/prompt", json.dumps({"prompt": wf}).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 400 and len(raw) < 64_000, len(raw)
    assert "lora = " in raw.decode()
    assert server.get_json("/system_stats")["system"]
    grown = server.log_path.stat().st_size - before
    print(f"\n10 MB LoRA name: answer {len(raw)} bytes, log {grown} bytes")
    assert grown < 64_000


def test_width_beyond_float_names_the_field(server, image):
    wf = tiny_workflow(WORKFLOW, image)
    sampler = node_id(wf, "WanVolumeSampler")
    wf[sampler]["inputs"]["width"] = 10 ** 400
    status, body = server.queue(wf)
    assert status == 400
    details = " | ".join(e["details"] for e in body["node_errors"][sampler]["errors"])
    assert "width = " in details and "Fix: " in details


def test_deeply_nested_preload_body_is_a_400(server):
    body = b"[" * 100_000 + b"]" * 100_000
    status, raw = server.request("/wan_volume/preload", body, {"Content-Type": "application/json"})
    assert status == 400 and b"nested too deep" in raw
    assert server.get_json("/system_stats")["system"]


@pytest.mark.parametrize("extra", ["a string", [1, 2]], ids=["string", "list"])
def test_extra_pnginfo_not_an_object_still_makes_the_video(server, image, extra, tmp_path):
    """ComfyUI validates no extra_data: a string or list is left out of the tags and named in the
    log, instead of failing Video Combine after all the sampling."""
    wf = tiny_workflow(WORKFLOW, image)
    combine = node_id(wf, "WanVolumeVideoCombine")
    wf[combine]["inputs"]["filename_prefix"] = f"hostile/extra-{type(extra).__name__}"
    status, body = server.queue(wf, extra_data={"extra_pnginfo": extra})
    assert status == 200, json.dumps(body)[:500]
    entry = server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:1500]
    (item,) = outputs_of(entry, combine)
    path = tmp_path / item["filename"]
    path.write_bytes(server.view(item))
    tags = {k.lower(): v for k, v in video.read_metadata(path).items()}
    assert json.loads(tags["prompt"]) and "workflow" not in tags
    assert "extra_pnginfo = " in server.log_path.read_text(errors="replace")
