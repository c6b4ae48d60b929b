"""The loader's state while the start-up warm-up runs, and sets found in a Hugging Face cache.

One real ComfyUI server started with WAN_VOLUME_WARMUP=<tiny set> on a slow volume
(tests/slow_volume/sitecustomize.py: reads crawl while a gate file exists), plus a Hugging Face
cache written by huggingface_hub from a loopback fake Hub. Debian's chromium (Playwright) opens a
workflow whose loader selects the warming set: the badge (classic) and the panel's pill (Nodes 2.0,
ComfyUI 0.28 only) say "⏳ set warming: reading N %" while the load crawls; once the gate is
removed the page, re-reading the status by itself, says "✔ set ready". The set from the cache,
picked in the loader, is "ready" (it was called missing although the dropdown offered it)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import hf_cache_fixtures as hc
from comfy_headless import ComfyServer
from fake_hub import FakeHub
from helpers import REPO
from test_browser import NEW_FRONTEND, UI_WORKFLOWS
from test_browser_nodes2_page import Page, panel
from wan_engine import tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.server]
HF_SET = hc.DIFFUSERS_REPO.split("/")[1]
WARMING = re.compile(r"^⏳ set warming: reading (\d+) %$")
RENDERERS = ["classic", "nodes2"] if NEW_FRONTEND else ["classic"]   # Nodes 2.0: frontend 1.45


@pytest.fixture(scope="module")
def server(tiny_volume: Path, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-warming")
    cache = base / "hub"
    with FakeHub() as hub:
        hub.add_repo(hc.DIFFUSERS_REPO, hc.files_of(tiny_volume / tiny_model.TINY_SET_NAME))
        hc.download(hub, hc.DIFFUSERS_REPO, cache)
    gate = base / "slow.gate"
    gate.touch()
    srv = ComfyServer(base / "comfy", tiny_volume, env={
        "WAN_VOLUME_WARMUP": tiny_model.TINY_SET_NAME, "WAN_VOLUME_HF_CACHE": str(cache),
        "WAN_VOLUME_STATE_DIR": str(base / "state"),
        "PYTHONPATH": str(REPO / "tests" / "slow_volume"),
        "WANVOLUME_TEST_SLOW_DIR": str(tiny_volume), "WANVOLUME_TEST_SLOW_GATE": str(gate)}).start()
    try:
        yield srv, gate
    finally:
        gate.unlink(missing_ok=True)
        srv.stop()


def loader_of(ui: dict) -> int:
    return next(n["id"] for n in ui["nodes"] if n["type"] == "WanVolumeModelLoader")


def test_warming_then_ready_and_a_cached_set_is_ready(server):
    srv, gate = server
    assert srv.get_json("/wan_volume/status")["warming"]["active"], srv.log_tail()
    with Page.open(srv) as page:
        ui = page.tiny_ui(UI_WORKFLOWS[0])
        loader = loader_of(ui)
        page.load_workflow(ui, "warming")
        seen = {}
        for renderer in RENDERERS:
            page.use(renderer)
            seen[renderer] = panel(page.pg, loader)
            shown = seen[renderer]["badge" if renderer == "classic" else "pill"]
            assert WARMING.match(shown or ""), (renderer, seen[renderer], srv.get_json("/wan_volume/status")["warming"])
            assert seen[renderer]["state"]["state"] == "warming"
        if "nodes2" in seen:
            assert seen["nodes2"]["pill_visible"] and seen["nodes2"]["in_vue_node"], seen["nodes2"]
        gate.unlink()                     # the volume is fast again: the warm-up ends
        page.pg.wait_for_function(
            f"() => app.graph.getNodeById({loader}).wanVolumeState.state === 'ready'", timeout=120_000)
        done = panel(page.pg, loader)
        # the warm-up placed the set by the memory plan: the badge names it (" · plan resident")
        assert done["badge"].startswith("✔ set ready") and done["pill"] == done["badge"], done
        warming = srv.get_json("/wan_volume/status")["warming"]
        assert (warming["phase"], warming["active"], warming["error"]) == ("ready", False, None), warming
        page.shot(f"warming_ready_{RENDERERS[-1]}")

        offered = page.pg.evaluate(f"""() => app.graph.getNodeById({loader}).widgets
            .find((w) => w.name === 'model_set').options.values""")
        assert HF_SET in offered, offered
        page.set_widget(loader, "model_set", HF_SET)
        page.pg.wait_for_function(
            f"() => app.graph.getNodeById({loader}).wanVolumeState.set?.name === {HF_SET!r}", timeout=20_000)
        cached = panel(page.pg, loader)
        assert cached["state"]["state"] == "ready", cached
        assert cached["badge"] == "✔ set ready" and cached["pill"] == "✔ set ready", cached
