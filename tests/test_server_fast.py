"""Through a real ComfyUI server: the shipped fast workflows run the distill schedule with one DiT
evaluation per step and both LoRAs applied; the speed settings node feeds the sampler."""
from __future__ import annotations

import re

import pytest

from comfy_headless import outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine import video

pytestmark = pytest.mark.server
FAST_WORKFLOWS = [p for p in API_WORKFLOWS if p.stem.endswith("_fast")]


@pytest.fixture(scope="module")
def image_name(comfy_server) -> str:
    return comfy_server.upload_image(REPO / "assets" / "two_people.png")


def run(server, wf, tmp_path, name):
    """Run ``wf``; return (video path, history entry, the server log written meanwhile)."""
    start = len(server.log_path.read_text(errors="replace"))
    entry = server.run(wf)
    (item,) = outputs_of(entry, node_id(wf, "WanVolumeVideoCombine"))
    path = tmp_path / name
    path.write_bytes(server.view(item))
    return path, entry, server.log_path.read_text(errors="replace")[start:]


def test_there_are_two_fast_workflows():
    assert [p.stem for p in FAST_WORKFLOWS] == ["kiss_i2v_480p_fast", "kiss_i2v_720p_fast"]


@pytest.mark.parametrize("workflow", FAST_WORKFLOWS, ids=lambda p: p.stem)
def test_fast_workflow_one_dit_evaluation_per_step_on_distill_schedule(comfy_server, image_name,
                                                                       workflow, tmp_path):
    seed = 5150 + FAST_WORKFLOWS.index(workflow)   # a new seed: ComfyUI must not serve a cached run
    wf = tiny_workflow(workflow, image_name, width=80, height=48, frames=9, seed=seed)
    assert wf[node_id(wf, "WanVolumeSampler")]["inputs"]["steps"] == 4
    path, entry, log = run(comfy_server, wf, tmp_path, f"{workflow.stem}.mp4")
    facts = video.probe(path)
    assert (facts.frames, facts.width, facts.height) == (9, 80, 48)
    lines = re.findall(r"sampled (\d+) steps \((\w+), sigmas ([^)]*)\) at \d+x\d+ with (\d+) DiT evaluations",
                       log)
    assert lines == [("4", "euler", "1, 0.9375, 0.8333, 0.625, 0", "4")]
    assert ("LoRAs for this run: tiny_distill_style_lora.safetensors x 1, "
            "tiny_kissing_style_lora.safetensors x 1") in log
    lora_nodes = [k for k, n in wf.items() if n["class_type"] == "WanVolumeLoraApply"]
    assert len(lora_nodes) == 2
    for k in lora_nodes:   # every LoRA layer of each file matched a DiT layer (reports of nodes run now)
        for report in entry["outputs"].get(k, {}).get("wanvolume_lora", []):
            assert report["matched"] == report["total"] > 0, report
            assert report["status"] == "full" and report["skipped"] == 0, report


def test_both_loras_change_the_fast_video(comfy_server, image_name, tmp_path):
    wf = tiny_workflow(FAST_WORKFLOWS[0], image_name, seed=777)
    lora_nodes = [k for k, n in wf.items() if n["class_type"] == "WanVolumeLoraApply"]
    frames = {}
    for label, strengths in {"both": (1.0, 1.0), "distill": (1.0, 0.0), "none": (0.0, 0.0)}.items():
        for k, s in zip(lora_nodes, strengths):
            wf[k]["inputs"]["strength"] = s
        frames[label] = video.read_frames(run(comfy_server, wf, tmp_path, f"{label}.mp4")[0]).astype(int)
    assert abs(frames["both"] - frames["distill"]).mean() > 1.0
    assert abs(frames["distill"] - frames["none"]).mean() > 1.0


def test_speed_settings_node_feeds_the_sampler(comfy_server, image_name, tmp_path):
    wf = tiny_workflow(FAST_WORKFLOWS[0], image_name, seed=31337)
    wf["90"] = {"class_type": "WanVolumeSpeedSettings",
                "inputs": {"attention": "auto", "compile": False, "cache": "first_block", "cache_threshold": 0.05}}
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["speed"] = ["90", 0]
    _, _, log = run(comfy_server, wf, tmp_path, "speed.mp4")
    assert "attention auto -> native on cpu" in log
    assert "with 4 DiT evaluations" in log


def test_fit_keep_gives_the_photos_aspect_at_the_same_area(comfy_server, image_name, tmp_path):
    from PIL import Image

    from wan_engine.sample import sampling

    wf = tiny_workflow(FAST_WORKFLOWS[0], image_name, width=48, height=96, fit="keep", seed=4711)
    photo = Image.open(REPO / "assets" / "two_people.png").size
    expected = sampling.output_size(photo, sampling.SampleRequest(prompt="-", width=48, height=96, fit="keep"))
    assert expected != (48, 96)                       # a landscape photo in a portrait request
    facts = video.probe(run(comfy_server, wf, tmp_path, "keep.mp4")[0])
    assert (facts.width, facts.height) == expected
