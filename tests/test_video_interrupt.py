"""An interrupt while Video Combine encodes leaves no file in the output folder; the next prompt works."""
from __future__ import annotations

import time

import pytest

from comfy_headless import outputs_of
from helpers import REPO
from wan_engine import video

pytestmark = pytest.mark.server


def slow_encode_workflow(image: str, frames: int) -> dict:
    """The photo at 512x512 repeated ``frames`` times into VP9 (the slowest of the formats)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                     "width": 512, "height": 512, "crop": "disabled"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": frames}},
        "4": {"class_type": "WanVolumeVideoCombine",
              "inputs": {"images": ["3", 0], "fps": 16.0, "format": "webm", "crf": 4,
                         "filename_prefix": "interrupt/kiss", "save_output": True, "embed_workflow": True}},
    }


def test_interrupt_during_encode_leaves_no_file(comfy_server):
    image = comfy_server.upload_image(REPO / "assets" / "two_people.png")
    folder = comfy_server.base_dir / "output" / "interrupt"
    status, body = comfy_server.queue(slow_encode_workflow(image, 240))
    assert status == 200, body
    deadline = time.monotonic() + 120
    while not list(folder.glob("*.webm.part")):           # the encoder has started writing
        assert time.monotonic() < deadline, comfy_server.log_tail()
        assert body["prompt_id"] not in comfy_server.get_json(f"/history/{body['prompt_id']}"), \
            "the encode finished before the interrupt: make it slower"
        time.sleep(0.02)
    comfy_server.request("/interrupt", b"", method="POST")
    entry = comfy_server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
    assert not list(folder.iterdir())                         # neither the partial file nor a video

    wf = slow_encode_workflow(image, 3)
    (item,) = outputs_of(comfy_server.run(wf), "4")
    assert [p.name for p in folder.iterdir()] == [item["filename"]]
    assert video.probe(folder / item["filename"]).frames == 3
