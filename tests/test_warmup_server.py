"""WAN_VOLUME_WARMUP on a real ComfyUI server: the status route says "warming" with progress, then
"ready"; the first /prompt (queued as soon as the server answers) finds the set resident and does
not read the volume again; the LoRA named is already attached; WAN_VOLUME_WARMUP_RUN's rehearsal
runs before "ready"."""
from __future__ import annotations

import re
import time

import pytest

from comfy_headless import ComfyServer
from helpers import API_WORKFLOWS, REPO, TINY_LORA, tiny_workflow
from wan_engine import tiny_model

pytestmark = pytest.mark.server
LOADED = re.compile(r"loaded model set (\S+) ")


@pytest.fixture(scope="module")
def warm_server(tiny_volume, tmp_path_factory):
    server = ComfyServer(tmp_path_factory.mktemp("comfy-warm"), tiny_volume,
                         env={"WAN_VOLUME_WARMUP": f"{tiny_model.TINY_SET_NAME},{TINY_LORA}",
                              "WAN_VOLUME_WARMUP_RUN": "64x48x5"}).start()     # tiny_workflow's size
    yield server
    server.stop()


def test_warmup_then_first_prompt_reads_nothing(warm_server):
    seen = [warm_server.get_json("/wan_volume/status")["warming"]]
    image = warm_server.upload_image(REPO / "assets" / "two_people.png")
    wf = tiny_workflow(API_WORKFLOWS[0], image)          # loader: bf16, offload auto (the warm-up's)
    status, body = warm_server.queue(wf)                  # as early as the server takes prompts
    assert status == 200, body
    deadline = time.monotonic() + 300
    while seen[-1]["active"] and time.monotonic() < deadline:
        time.sleep(0.2)
        seen.append(warm_server.get_json("/wan_volume/status")["warming"])
    first, last = seen[0], seen[-1]
    assert set(first) >= {"set", "progress", "phase", "active", "bytes_done", "bytes_total", "error"}
    assert first["phase"] in ("waiting", "reading", "to-device", "loras", "rehearsal", "ready")
    assert (last["set"], last["phase"], last["progress"], last["error"]) == \
        (tiny_model.TINY_SET_NAME, "ready", 1.0, None), warm_server.log_tail()
    assert last["loras"] == [TINY_LORA] and last["bytes_done"] == last["bytes_total"] > 0
    entry = warm_server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "success", warm_server.log_tail()
    reports = [r for n in entry["outputs"].values() for r in n.get("wanvolume_report", [])]
    assert reports and reports[0]["loaded_from_volume"] is False, reports
    loads = LOADED.findall(warm_server.log_path.read_text(errors="replace"))
    assert loads == [tiny_model.TINY_SET_NAME], "the set is read once: by the warm-up"
    # the rehearsal ran one step at the workflow's size before "ready", through the sampler's phases
    log = warm_server.log_path.read_text(errors="replace")
    assert re.search(r"warm-up rehearsal: 1 step of 64x48x5 in [\d.]+ s", log), warm_server.log_tail()
    assert log.index("warm-up rehearsal") < log.index("warm-up of %s ready" % tiny_model.TINY_SET_NAME)
