"""scripts/runpod_client.py end to end: a shipped API workflow through RunPod's endpoint API and
worker-comfyui's job contract (tests/runpod_standin.py, a stand-in) in front of a real ComfyUI with
the pack and the tiny volume; the MP4 and the run report come back; the queue-endpoint health check;
the worker's error reaches the user."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import API_WORKFLOWS, REPO, TINY_LORA
from runpod_standin import Endpoint
from wan_engine import tiny_model, video

pytestmark = pytest.mark.server
CLIENT = REPO / "scripts" / "runpod_client.py"
KEY = "test-key-1234"
WORKFLOW = next(p for p in API_WORKFLOWS if p.name == "kiss_i2v_480p.json")   # one LoRA node
TINY = [f"WanVolumeModelLoader.model_set={tiny_model.TINY_SET_NAME}", f"WanVolumeLoraApply.lora={TINY_LORA}",
        "WanVolumeSampler.width=64", "WanVolumeSampler.height=48", "WanVolumeSampler.frames=5",
        "WanVolumeSampler.steps=2"]


@pytest.fixture(scope="module")
def endpoint(comfy_server):
    ep = Endpoint(comfy_server.url, KEY).start()
    yield ep
    ep.stop()


def client(*args: str, key: str | None = KEY, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"} | ({"RUNPOD_API_KEY": key} if key else {})
    return subprocess.run([sys.executable, str(CLIENT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_args(endpoint, out, *extra: str) -> list[str]:
    args = ["--url", endpoint.url, "--poll", "0.2", "run", "--photo", str(REPO / "assets" / "two_people.png"),
            "--workflow", str(WORKFLOW), "--prompt", "two people hug, then they engage in k144ing kissing.",
            "--seed", "7", "--out", str(out)]
    for spec in TINY + list(extra):
        args += ["--input", spec]
    return args


def test_shipped_workflow_gives_a_playable_mp4_and_its_report(endpoint, tmp_path):
    proc = client(*run_args(endpoint, tmp_path))
    assert proc.returncode == 0, proc.stderr
    videos, reports = sorted(tmp_path.glob("*.mp4")), sorted(tmp_path.glob("*.json"))
    assert len(videos) == 1 and len(reports) == 1
    facts = video.probe(videos[0])                       # decoded by ffmpeg: playable
    assert (facts.frames, facts.width, facts.height) == (5, 64, 48)
    report = json.loads(reports[0].read_text())
    assert report["video"] == videos[0].name and report["seconds"] > 0
    assert {p["name"] for p in report["phases"]} >= {"load", "sample", "decode", "write"}
    assert report["settings"]["model_set"] == tiny_model.TINY_SET_NAME and report["settings"]["steps"] == 2
    sampler = next(n for n in json.loads(video.read_metadata(videos[0])["prompt"]).values()
                   if n["class_type"] == "WanVolumeSampler")       # the prompt the worker ran
    assert sampler["inputs"]["seed"] == 7 and sampler["inputs"]["prompt"].startswith("two people hug")
    assert f"run report {reports[0].name}" in proc.stderr and "video: " in proc.stderr
    job_id = next(j for j, job in endpoint.jobs.items() if job.get("output", {}).get("images"))
    again = client("--url", endpoint.url, "status", job_id, "--out", str(tmp_path / "again"))
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "COMPLETED"
    assert (tmp_path / "again" / videos[0].name).read_bytes() == videos[0].read_bytes()


def test_check_job_reports_the_volume_and_health_answers(endpoint, tmp_path, tiny_volume):
    proc = client("--url", endpoint.url, "--poll", "0.2", "check", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ready"] is True and doc["models_dir"] == str(tiny_volume)
    assert tiny_model.TINY_SET_NAME in doc["model_sets"] and TINY_LORA in doc["loras"]
    health = client("--url", endpoint.url, "health")
    assert health.returncode == 0
    assert json.loads(health.stdout)["jobs"]["completed"] >= 1


def test_s3_urls_are_downloaded(comfy_server, tmp_path):
    """BUCKET_ENDPOINT_URL set on the worker: output.images carries URLs; the client fetches them."""
    ep = Endpoint(comfy_server.url, KEY, s3=True).start()
    try:
        proc = client("--url", ep.url, "--poll", "0.2", "check", "--out", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        job = next(iter(ep.jobs.values()))
        assert job["output"]["images"][0]["type"] == "s3_url"
        assert json.loads(next(tmp_path.glob("volume_status_*.json")).read_text())["ready"] is True
    finally:
        ep.stop()


def test_missing_set_fails_the_job_with_the_packs_error(endpoint, tmp_path):
    proc = client(*run_args(endpoint, tmp_path, "WanVolumeModelLoader.model_set=Wan2.1-I2V-14B-480P-Diffusers"))
    assert proc.returncode == 1
    assert "FAILED on the worker" in proc.stderr and "Workflow validation failed" in proc.stderr
    assert "node 2: model_set = 'Wan2.1-I2V-14B-480P-Diffusers': no such model set" in proc.stderr
    assert "Fix: pre-load one with `python wanvolume.py preload" in proc.stderr
    assert "_async_map_node_over_list" not in proc.stderr          # the pack's words, not the tracebacks
    assert not list(tmp_path.glob("*.mp4"))
    assert client("--url", endpoint.url, "health").returncode == 0          # the endpoint still serves


def test_bad_photo_missing_key_and_wrong_key(endpoint, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_text("not an image")
    proc = client("--url", endpoint.url, "run", "--photo", str(bad), "--workflow", str(WORKFLOW))
    assert proc.returncode == 2 and f"--photo = {bad}: not a PNG, JPEG or WebP image" in proc.stderr
    proc = client("--endpoint-id", "abc123", "health", key=None)
    assert proc.returncode == 2 and "RUNPOD_API_KEY is not set; fix: export RUNPOD_API_KEY" in proc.stderr
    proc = client("--url", endpoint.url, "health", key="wrong")
    assert proc.returncode == 3 and "HTTP 401, the API key was refused" in proc.stderr
    proc = client("--url", endpoint.url, "run", "--photo", str(REPO / "assets" / "two_people.png"),
                  "--workflow", str(WORKFLOW), "--input", "NoSuchNode.x=1")
    assert proc.returncode == 2 and "--input = 'NoSuchNode.x=1'" in proc.stderr


def test_timeout_names_the_job_and_how_to_fetch_it(tmp_path):
    """An endpoint with no worker taking jobs (all busy, or none started): the job stays IN_QUEUE."""
    import threading

    ep = Endpoint("http://127.0.0.1:9", KEY)                 # its worker thread is never started
    threading.Thread(target=ep.server.serve_forever, daemon=True).start()
    try:
        proc = client("--url", ep.url, "--timeout", "0.5", "--poll", "0.1", "check", "--out", str(tmp_path))
    finally:
        ep.server.shutdown()
        ep.server.server_close()
    job_id = next(iter(ep.jobs))
    assert proc.returncode == 4
    assert f"--timeout = 0.5 s: job {job_id} is still IN_QUEUE" in proc.stderr
    assert f"runpod_client.py status {job_id}" in proc.stderr
