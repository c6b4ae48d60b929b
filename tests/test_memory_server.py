"""Memory behaviour through a real ComfyUI server: /free, interrupts, a queue, a 50-prompt soak.

(``POST /free {"unload_models": true}`` keeping the set in RAM is tested in test_server.py.)

What the server logs is the observation: ``loaded model set`` once per read of the volume (engine),
``Requested to load WanComponent`` when ComfyUI's load_models_gpu takes our components.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from comfy_headless import outputs_of
from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow

pytestmark = pytest.mark.server
log = logging.getLogger(__name__)
LOADED = "loaded model set "


@pytest.fixture(scope="module")
def image_name(comfy_server) -> str:
    return comfy_server.upload_image(REPO / "assets" / "two_people.png")


def count(server, text: str) -> int:
    return server.log_path.read_text(errors="replace").count(text)


def outputs(server) -> set[Path]:
    return {p for p in (server.base_dir / "output").rglob("*") if p.is_file()}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def free_until_logged(server, text: str, timeout: float = 60, **body) -> None:
    """POST /free until ``text`` is logged. ComfyUI's worker can miss the wake-up when the flag
    arrives while it is between reading the flags and waiting on the queue (e.g. in its gc after
    a prompt); it then sleeps until the next prompt, so a repeated POST wakes it."""
    before = count(server, text)
    deadline = time.monotonic() + timeout
    while count(server, text) == before:
        assert time.monotonic() < deadline, f"{text!r} not logged; log:\n{server.log_tail()}"
        status, _ = server.request("/free", json.dumps(body).encode(),
                                   {"Content-Type": "application/json"})
        assert status == 200
        for _ in range(30):
            if count(server, text) > before:
                break
            time.sleep(0.1)


def run_ok(server, wf) -> dict:
    entry = server.run(wf)
    outputs_of(entry, node_id(wf, "WanVolumeVideoCombine"))      # raises with the messages if it failed
    return entry


def test_free_memory_drops_the_set_and_next_prompt_reads_it_again(comfy_server, image_name):
    wf = tiny_workflow(API_WORKFLOWS[0], image_name, seed=6161)
    run_ok(comfy_server, wf)
    loads = count(comfy_server, LOADED)
    free_until_logged(comfy_server, "dropping model set", unload_models=True, free_memory=True)
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["seed"] = 6162
    run_ok(comfy_server, wf)
    assert count(comfy_server, LOADED) == loads + 1


def interrupt_when(server, wf, marker: str, timeout: float = 120) -> tuple[dict, float]:
    """Queue ``wf``, POST /interrupt once ``marker`` is in this prompt's log; (entry, seconds to end)."""
    status, body = server.queue(wf)
    assert status == 200, body
    deadline = time.monotonic() + timeout
    while marker not in server.log_path.read_text(errors="replace").rsplit("got prompt", 1)[-1]:
        assert time.monotonic() < deadline, f"{marker!r} not seen; log:\n{server.log_tail()}"
        time.sleep(0.05)
    t0 = time.monotonic()
    server.request("/interrupt", b"", method="POST")
    entry = server.wait(body["prompt_id"], timeout=300)
    return entry, time.monotonic() - t0


@pytest.mark.parametrize("phase", ["sampling", "decode"])
def test_interrupt_leaves_no_file_and_next_prompt_does_not_reload(comfy_server, image_name, phase):
    warm = tiny_workflow(API_WORKFLOWS[0], image_name, seed=7070)
    run_ok(comfy_server, warm)                                   # resident before we count
    loads, before = count(comfy_server, LOADED), outputs(comfy_server)
    if phase == "sampling":
        wf = tiny_workflow(API_WORKFLOWS[0], image_name, steps=200, seed=7171)
        marker = "speed options: attention"                      # logged as the denoising loop starts
    else:   # one step, then a decode of many small tiles; interrupt once sampling has finished
        wf = tiny_workflow(API_WORKFLOWS[0], image_name, steps=1, seed=7272, width=256, height=256,
                           frames=9, tile_size=64, tile_overlap=32)      # 192 decoder calls
        marker = "sampled 1 steps"
    entry, seconds = interrupt_when(comfy_server, wf, marker)
    log.info("interrupt during %s: prompt ended %.2f s after POST /interrupt", phase, seconds)
    print(f"interrupt during {phase}: ended {seconds:.2f} s after POST /interrupt")
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds
    assert node_id(wf, "WanVolumeVideoCombine") not in entry.get("outputs", {})
    tail = comfy_server.log_path.read_text(errors="replace").rsplit("got prompt", 1)[-1]
    assert "sampled 200 steps" not in tail and "wrote " not in tail
    assert outputs(comfy_server) == before                       # nothing written
    run_ok(comfy_server, tiny_workflow(API_WORKFLOWS[0], image_name, seed=7373))
    assert count(comfy_server, LOADED) == loads                  # no reload after the interrupt


def test_five_prompts_queued_at_once(comfy_server, image_name):
    run_ok(comfy_server, tiny_workflow(API_WORKFLOWS[0], image_name, seed=8000))
    loads = count(comfy_server, LOADED)
    ids = []
    for seed in range(8001, 8006):
        status, body = comfy_server.queue(tiny_workflow(API_WORKFLOWS[0], image_name, seed=seed))
        assert status == 200, body
        ids.append(body["prompt_id"])
    videos = set()
    for pid in ids:
        entry = comfy_server.wait(pid, timeout=600)
        wf_id = next(k for k, v in entry["outputs"].items() if v.get("animated"))
        item = outputs_of(entry, wf_id)[0]
        videos.add(comfy_server.view(item))
    assert len(videos) == 5                                      # all done, five different videos
    assert count(comfy_server, LOADED) == loads                  # one load for the queue


def test_soak_50_prompts_one_load_and_flat_rss(comfy_server, image_name):
    pid = comfy_server.proc.pid
    wf = tiny_workflow(API_WORKFLOWS[0], image_name, seed=9000, width=32, height=32, steps=1)
    run_ok(comfy_server, wf)
    loads = count(comfy_server, LOADED)
    sampler = node_id(wf, "WanVolumeSampler")
    rss = {}
    t0 = time.monotonic()
    for i in range(1, 51):
        wf[sampler]["inputs"]["seed"] = 9000 + i
        run_ok(comfy_server, wf)
        if i in (5, 50):
            rss[i] = rss_kib(pid)
    drift = (rss[50] - rss[5]) / rss[5] * 100
    figures = (f"soak: 50 prompts in {time.monotonic() - t0:.0f} s; VmRSS after 5: {rss[5] / 1024:.0f} MiB, "
               f"after 50: {rss[50] / 1024:.0f} MiB, drift {drift:+.2f} %")
    log.info(figures)
    print(figures)
    artifacts = Path(os.environ.get("WANVOLUME_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "soak.txt").write_text(figures + "\n")
    assert count(comfy_server, LOADED) == loads
    assert drift < 5.0, figures
