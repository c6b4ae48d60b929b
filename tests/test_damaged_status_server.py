"""Damaged files as the editor shows them, against a real ComfyUI server on a damaged volume.

GET /wan_volume/status names the damaged set and LoRA with the file the loader and LoRA nodes
refuse them by (the same file /prompt names); the editor's volume panel lists the set as damaged
with its file and fix, and the loader badge of a node whose selected set is damaged turns red with
the reason (Debian's chromium through playwright, as tests/test_browser.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_headless import ComfyServer
from conftest import ARTIFACTS
from damaged_volume import DIT, TRUNCATED_LORA, TRUNCATED_SET, WRONGARCH_SET, damaged_copy
from helpers import REPO, TINY_LORA, node_id, tiny_workflow
from wan_engine.store import auto_set, damage
from wan_engine import tiny_model
from test_browser import LAUNCH_ARGS, TINY, browser, load, set_widgets  # noqa: F401 (fixture)

pytestmark = pytest.mark.server
RED = "#b71c1c"


@pytest.fixture(scope="module")
def vol(tiny_volume_template: Path, tmp_path_factory) -> Path:
    return damaged_copy(tiny_volume_template, tmp_path_factory.mktemp("damaged") / "models")


@pytest.fixture(scope="module")
def server(vol: Path, tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy-damaged"), vol).start()
    yield srv
    srv.stop()


def by_name(items: list[dict]) -> dict[str, dict]:
    return {i["name"]: i for i in items}


def options(info: dict, node: str, name: str) -> list[str]:
    spec = info[node]["input"]["required"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_status_route_names_what_prompt_refuses(server, vol):
    doc = server.get_json("/wan_volume/status")
    sets, loras = by_name(doc["model_sets"]), by_name(doc["loras"])
    cut = sets[TRUNCATED_SET]["damaged"]
    assert cut["file"] == str(vol / TRUNCATED_SET / DIT) and "truncated" in cut["problem"]
    assert cut["fix"] == damage.SET_FIX
    assert sets[WRONGARCH_SET]["damaged"]["problem"].startswith("not a Wan2.1 DiT")
    assert sets[tiny_model.TINY_SET_NAME]["damaged"] is None and loras[TINY_LORA]["damaged"] is None
    assert loras[TRUNCATED_LORA]["damaged"]["file"] == str(vol / TRUNCATED_LORA)
    # Not offered as usable: the dropdowns leave out exactly the damaged ones.
    info = server.get_json("/object_info")
    sets_offered = options(info, "WanVolumeModelLoader", "model_set")
    assert sets_offered == [*auto_set.VALUES, tiny_model.TINY_SET_NAME]   # the automatic choices first
    loras_offered = options(info, "WanVolumeLoraApply", "lora")
    assert TRUNCATED_LORA not in loras_offered and TINY_LORA in loras_offered
    # /prompt refuses the damaged set naming the very message the status document shows.
    image = server.upload_image(REPO / "assets" / "two_people.png")
    wf = tiny_workflow(REPO / "workflows" / "api" / "kiss_i2v_480p.json", image)
    wf[node_id(wf, "WanVolumeModelLoader")]["inputs"]["model_set"] = TRUNCATED_SET
    status, body = server.queue(wf)
    assert status == 400 and cut["message"] in json.dumps(body["node_errors"]), body


@pytest.fixture(scope="module")
def page(server, browser):  # noqa: F811 (the browser fixture of test_browser.py)
    status, _ = server.request("/settings", json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                               {"Content-Type": "application/json"})
    assert status == 200
    pg = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
    pg.goto(server.url)
    pg.wait_for_function("() => window.app && app.graph && app.vueAppReady && app.extensionManager",
                         timeout=120_000)
    yield pg
    ours = [e for e in errors if "/extensions/ComfyUI-WanVolume/" in e]
    assert not ours, "errors from web/js/: " + "\n".join(ours)
    pg.close()


@pytest.mark.browser
def test_panel_and_badge_show_the_damaged_set_with_its_file(page, server, vol):
    page.click(".wanvolume-tab-button")
    page.wait_for_selector(".wanvolume-body[data-loaded='true']", timeout=20_000)
    body = page.locator(".wanvolume-body")
    path = str(vol / TRUNCATED_SET / DIT)
    row = body.locator(f".wv-set[data-name='{TRUNCATED_SET}']")
    assert row.get_attribute("data-state") == "damaged" and row.get_attribute("data-file") == path
    assert row.locator(".wv-state.wv-damaged").inner_text() == "damaged"
    reason = row.locator(".wv-damaged-reason").inner_text()
    assert reason.startswith(f"the file {path} is damaged: ") and "truncated" in reason
    assert row.locator(".wv-fix").inner_text() == f"Fix: {damage.SET_FIX}"
    wrong = body.locator(f".wv-set[data-name='{WRONGARCH_SET}']")
    assert wrong.get_attribute("data-state") == "damaged" and "not a Wan2.1 DiT" in wrong.inner_text()
    assert body.locator(f".wv-set[data-name='{tiny_model.TINY_SET_NAME}']").get_attribute("data-state") == "ready"
    lora = body.locator(f".wv-lora[data-name='{TRUNCATED_LORA}']")
    assert lora.get_attribute("data-state") == "damaged" and str(vol / TRUNCATED_LORA) in lora.inner_text()
    assert body.locator(f".wv-lora[data-name='{TINY_LORA}']").get_attribute("data-state") == "ready"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_damaged_panel.png"))
    page.click(".wanvolume-tab-button")
    # A workflow whose loader selects the damaged set: its badge turns red and names file and fix.
    values = {**TINY, "WanVolumeModelLoader": {"model_set": TRUNCATED_SET}}
    ui = set_widgets(load(REPO / "workflows" / "kiss_i2v_480p.json"), server.get_json("/object_info"), values)
    page.evaluate("async (wf) => { await app.loadGraphData(wf, true, true, 'damaged'); }", ui)
    page.wait_for_function("() => app.graph.nodes.filter(n => n.comfyClass === 'WanVolumeModelLoader')"
                           ".every(n => n.wanVolumeState)", timeout=20_000)
    node = page.evaluate("""() => {
      const n = app.graph.nodes.find(n => n.comfyClass === 'WanVolumeModelLoader');
      return {state: n.wanVolumeState, badge: {text: n.wanVolumeBadge.text, color: n.wanVolumeBadge.bgColor},
              lines: n.wanVolumeLines, value: n.widgets.find(w => w.name === 'model_set').value};
    }""")
    assert node["value"] == TRUNCATED_SET
    assert node["state"]["state"] == "damaged" and node["state"]["file"] == path
    assert node["badge"]["color"] == RED and "damaged" in node["badge"]["text"]
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "browser_damaged_badge.png"))
    drawn = "".join(node["lines"])
    assert reason in drawn and f"fix: {damage.SET_FIX}" in drawn
