"""Through a real ComfyUI: an hf download volume loads with no trust switch, gives the
diffusers layout's video, refuses changed .pth files, and the preload route refuses bad bodies."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import hf_local_fixtures as hf
import layout_writers as lw
from comfy_headless import ComfyServer, outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine.store import manifest as mf
from wan_engine import video
from wan_engine.store.scan import wan_original
from wan_engine.tiny_model import build_components, ensure_demo_lora

pytestmark = pytest.mark.server

WAN = "Wan2.1-I2V-14B-720P"
BAD = "Wan2.1-I2V-tiny-damaged-720P"
DIFFUSERS = "Wan2.1-I2V-tiny-Diffusers"
LORA = "kissing-lora/kissing_30_epochs.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("hfserver") / "models"
    comps = lw.representable(build_components(seed=0))
    lw.write_diffusers(models / DIFFUSERS, comps)
    hf.write_hf_wan(models / WAN, comps)
    hf.write_hf_wan(models / BAD, comps)
    hf.write_hf_lora(models / "kissing-lora", ensure_demo_lora(tmp_path_factory.mktemp("lora")))
    base = tmp_path_factory.mktemp("comfy-hf")
    srv = ComfyServer(base, models, env={"WAN_VOLUME_TRUST_PTH": "0",
                                         "WAN_VOLUME_ALLOW_PRELOAD": "1"}).start()
    srv.image = srv.upload_image(REPO / "assets" / "two_people.png")
    yield srv
    srv.stop()


def prompt(srv, model_set: str) -> dict:
    wf = tiny_workflow(API_WORKFLOWS[0], srv.image)
    loader = node_id(wf, "WanVolumeModelLoader")
    wf[loader]["inputs"].update(model_set=model_set, trust_pth=True)   # an old client's input
    wf[node_id(wf, "WanVolumeLoraApply")]["inputs"]["lora"] = LORA
    return wf


def frames_of(srv, wf, tmp_path: Path, name: str) -> np.ndarray:
    entry = srv.run(wf)
    (item,) = outputs_of(entry, node_id(wf, "WanVolumeVideoCombine"))
    path = tmp_path / name
    path.write_bytes(srv.view(item))
    return video.read_frames(path)


def error_of(srv, wf) -> str:
    status, body = srv.queue(wf)
    assert status == 200, body
    entry = srv.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    (err,) = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    return err["exception_message"]


def hashed(srv) -> int:
    return len(re.findall(r"hashing .* once against its published SHA-256", srv.log_path.read_text()))


def test_hf_volume_loads_without_trust_and_gives_the_diffusers_video(server, tmp_path):
    wan = frames_of(server, prompt(server, WAN), tmp_path, "wan.mp4")
    assert hashed(server) == 3     # T5, CLIP, VAE: each hashed once; trust_pth=True did not skip it
    man = json.loads(mf.manifest_path(server.models_dir, "wan21-i2v-720p").read_text())
    recorded = {e["relpath"]: e for e in man["entries"]}
    for key in ("text_encoder", "image_encoder", "vae"):
        entry = recorded[f"{WAN}/{wan_original.FILES[key]}"]
        assert entry["origin"] == "hf-local-dir" and entry["revision"] == hf.COMMIT
    ref = frames_of(server, prompt(server, DIFFUSERS), tmp_path, "diffusers.mp4")
    np.testing.assert_array_equal(wan, ref)
    frames_of(server, prompt(server, WAN), tmp_path, "wan2.mp4")   # reloaded after the other set
    assert hashed(server) == 3, "a second load must not hash the files again"
    doc = server.get_json("/wan_volume/status")
    (s,) = [s for s in doc["model_sets"] if s["name"] == WAN]
    # the .pth files are verified now; the safetensors still rest on the Hub's records only
    assert s["integrity"] == "hub-metadata" and s["bad_files"] == {}


def test_changed_pth_is_refused_through_the_server(server):
    root = server.models_dir / BAD
    t5, clip = root / wan_original.FILES["text_encoder"], root / wan_original.FILES["image_encoder"]
    original = t5.read_bytes()
    hf.flip_byte(t5, len(original) // 2)
    hf.age(t5, -60)
    msg = error_of(server, prompt(server, BAD))
    assert str(t5) in msg and "hf download recorded" in msg and "SHA-256" in msg
    doc = server.get_json("/wan_volume/status")
    (s,) = [s for s in doc["model_sets"] if s["name"] == BAD]
    assert s["integrity"] == "bad" and str(t5) in s["bad_files"]
    t5.write_bytes(original)                        # put back: it loads past T5 again ...
    hf.age(t5, 3600)
    hf.truncate(clip, clip.stat().st_size - 4096)  # ... and stops at the truncated CLIP file
    msg = error_of(server, prompt(server, BAD))
    assert str(clip) in msg and f"({clip.stat().st_size} bytes)" in msg and str(t5) not in msg


@pytest.mark.parametrize("body", [b"[1, 2]", b'{"profile": ["kissing-lora"]}', b"not json",
                                  b'"kissing-lora"', b'{"profile": 5}', b"{}", b"",
                                  b'{"profile": {"name": "kissing-lora"}}', b"\xff\xfe{",
                                  b'{"profile": null}', b"123"])
def test_preload_route_answers_400_for_malformed_bodies(server, body):
    status, raw = server.request("/wan_volume/preload", body, {"Content-Type": "application/json"},
                                 method="POST")
    assert status == 400, raw
    assert "profile" in json.loads(raw)["error"] or "body" in json.loads(raw)["error"]
    assert server.proc.poll() is None
