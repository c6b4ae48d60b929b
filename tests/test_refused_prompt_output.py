"""A prompt refused at /prompt leaves nothing in ComfyUI's output folder (issue 24, item 10).

Video Combine checks its ``filename_prefix`` at /prompt; ComfyUI's own resolution creates the
sub-folder, so a refused prompt (here for the sampler's steps) used to leave ``output/<sub>/``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from comfy_headless import ComfyServer
from helpers import REPO, node_id, tiny_workflow

pytestmark = pytest.mark.server
WORKFLOW = REPO / "workflows" / "api" / "kiss_i2v_480p.json"


@pytest.fixture(scope="module")
def server(tiny_volume: Path, tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("refused") / "comfy", tiny_volume).start()
    yield srv
    srv.stop()


def test_a_refused_prompt_creates_no_output_folder(server):
    image = server.upload_image(REPO / "assets" / "two_people.png")
    wf = tiny_workflow(WORKFLOW, image)
    wf[node_id(wf, "WanVolumeVideoCombine")]["inputs"]["filename_prefix"] = "refused_sub/deeper/kiss"
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["steps"] = 0
    status, body = server.queue(wf)
    assert status == 400, body
    output = server.base_dir / "output"
    assert not (output / "refused_sub").exists(), sorted(p.name for p in output.iterdir())
    # the same prefix on a valid prompt still gets its folder (created when the video is written)
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["steps"] = 1
    wf[node_id(wf, "WanVolumeVideoCombine")]["inputs"]["filename_prefix"] = "../outside/kiss"
    status, body = server.queue(wf)
    assert status == 400 and "filename_prefix" in str(body), body
    assert "wanvolume-prefix-" not in str(body)      # the scratch folder is never shown
