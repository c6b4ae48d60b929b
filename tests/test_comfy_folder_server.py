"""Through a real ComfyUI started with --extra-model-paths-config: a ComfyUI-files set spread over
two extra folders (no tokenizer folder) is offered, loads, and makes the diffusers layout's video;
a second prompt with unchanged files does not rescan the volume."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import layout_writers as lw
from comfy_headless import ComfyServer
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine import tiny_model, video
from wan_engine.tiny_model import build_components
from test_server import run_video

pytestmark = pytest.mark.server

DIFFUSERS = "Wan2.1-I2V-tiny-spiece-Diffusers"
COMFY = "comfy/wan2.1_i2v_720p_tiny_bf16"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Volume: the diffusers layout. extra_model_paths.yaml: DiT + umt5 in one tree, CLIP + VAE
    in another, both outside the volume, as ComfyUI users keep them."""
    base = tmp_path_factory.mktemp("comfy-extra")
    comps = lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))
    vol = base / "volume"
    lw.write_diffusers(vol / DIFFUSERS, comps)
    tiny_model.ensure_demo_lora(vol)
    full = base / "written"
    lw.write_comfy(full, comps, ("bf16",))
    for kind, tree in (("diffusion_models", "a"), ("text_encoders", "a"), ("clip_vision", "b"),
                       ("vae", "b")):
        shutil.copytree(full / kind, base / tree / "models" / kind)
    shutil.rmtree(full)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"tree_a:\n  base_path: {base / 'a' / 'models'}\n  diffusion_models: diffusion_models\n"
                    f"  text_encoders: text_encoders\n"
                    f"tree_b:\n  base_path: {base / 'b' / 'models'}\n  clip_vision: clip_vision\n"
                    f"  vae: vae\n")
    srv = ComfyServer(base / "comfy", vol, extra_args=["--extra-model-paths-config", str(yaml)]).start()
    yield srv
    srv.stop()


def scans(server) -> int:
    """Volume scans so far, from the server log (volume.py logs each real scan)."""
    return server.log_path.read_text(errors="replace").count("WanVolume index: scanned")


def test_extra_paths_set_is_offered_runs_and_matches_diffusers(server, tmp_path):
    sets = server.get_json("/object_info/WanVolumeModelLoader")["WanVolumeModelLoader"]
    spec = sets["input"]["required"]["model_set"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert COMFY in options and DIFFUSERS in options, options
    image = server.upload_image(REPO / "assets" / "two_people.png")
    workflow = next(p for p in API_WORKFLOWS if "720p" in p.stem)
    frames = {}
    for name in (DIFFUSERS, COMFY):
        wf = tiny_workflow(workflow, image)
        wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]["model_set"] = name
        frames[name] = video.read_frames(run_video(server, wf, tmp_path, f"{name.replace('/', '_')}.mp4"))
    assert np.array_equal(frames[COMFY], frames[DIFFUSERS])
    assert frames[COMFY].std() > 1.0, "a real picture, not a constant"

    done = scans(server)
    assert done >= 1, "the scan log line is what this test counts"
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["seed"] = 11      # a new prompt, same files
    run_video(server, wf, tmp_path, "second.mp4")
    assert scans(server) == done, "a prompt with unchanged files rescanned the volume"
