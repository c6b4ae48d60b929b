"""The editor shows, on the node that needs it, the command that fetches the very file that is missing.

Debian's chromium (Playwright) against one real ComfyUI server whose volume holds tiny stand-ins
under the names the shipped workflows ask for. Each shipped UI workflow is opened, unchanged, once
per file it needs, with that one file moved off the volume (the page reloaded per case): the loader
or LoRA node that asks for it must show the fetch command of the profile that provides that file
(before: the first LoRA profile missing from the volume, e.g. the distill LoRA for the kissing LoRA).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from comfy_headless import ComfyServer
from helpers import REPO, TINY_DISTILL_LORA, TINY_LORA
from wan_engine import tiny_model
from wan_engine.store import auto_set, profiles

pytestmark = [pytest.mark.browser, pytest.mark.server]

CHROMIUM = Path("/usr/bin/chromium")
UI_WORKFLOWS = sorted((REPO / "workflows").glob("kiss_*.json"))   # Wan2.1 (the tiny volume's set)
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KINDS = {"WanVolumeModelLoader": "model_set", "WanVolumeLoraApply": "lora"}
# the shipped loader's auto values: the tiny set stands in under a name that carries the resolution
STAND_IN = {auto_set.VALUES[0]: "Wan2.1-I2V-14B-720P-Diffusers", auto_set.VALUES[1]: "Wan2.1-I2V-14B-480P-Diffusers"}


def needs(ui: dict) -> list[tuple[int, str, str]]:
    """(node id, kind, name) of every set and LoRA file a UI workflow asks for."""
    return [(n["id"], KINDS[n["type"]], n["widgets_values"][0]) for n in ui["nodes"] if n["type"] in KINDS]


def top_entry(name: str) -> str:
    """What to move off the volume to take ``name`` away: its top-level folder (an auto value's
    stand-in set)."""
    return STAND_IN.get(name) or name.split("/")[0]


def cases() -> list[tuple[Path, int, str, str]]:
    return [(path, node, kind, name) for path in UI_WORKFLOWS
            for node, kind, name in needs(json.loads(path.read_text()))]


@pytest.fixture(scope="module")
def volume(tiny_volume_template: Path, tmp_path_factory) -> Path:
    """Tiny stand-ins under every name the shipped workflows ask for."""
    models = tmp_path_factory.mktemp("hints") / "models"
    models.mkdir()
    sources = {"model_set": tiny_volume_template / tiny_model.TINY_SET_NAME,
               "lora": tiny_volume_template / TINY_LORA}
    for _, _, kind, name in cases():
        dest = models / (name if kind == "lora" else top_entry(name))
        if dest.exists():
            continue
        src = sources[kind] if "distill" not in name else tiny_volume_template / TINY_DISTILL_LORA
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest)
    return models


@pytest.fixture(scope="module")
def page(volume: Path, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    server = ComfyServer(tmp_path_factory.mktemp("comfy-hints"), volume).start()
    try:
        server.request("/settings", json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                       {"Content-Type": "application/json"})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
            pg = browser.new_page(viewport={"width": 1600, "height": 1000})
            pg.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
            pg.goto(server.url)
            yield pg, server
            browser.close()
    finally:
        server.stop()


def shown(pg, url: str, ui: dict, node_id: int, name: str) -> dict:
    """Open the editor afresh, open ``ui`` as the workflow browser does, return the node's badge state.

    Frontend 1.45 keeps the open workflow in the address (``#<workflow id>``) and session storage:
    a plain reload restores it, and opening the same workflow again then re-uses those nodes. It also
    keeps open workflows across reloads: a workflow opened under a name already open (from an
    earlier case) can switch to that one, so each case opens its own ``name``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    pg.evaluate("() => { sessionStorage.clear(); }")
    pg.goto(url)
    pg.wait_for_function("() => window.app && app.graph && app.vueAppReady", timeout=120_000)
    pg.evaluate("async (wf) => { await app.loadGraphData(wf.ui, true, true, wf.name); }",
                {"ui": ui, "name": name})
    try:
        pg.wait_for_function(f"() => app.graph.getNodeById({node_id})?.wanVolumeState", timeout=60_000)
    except PlaywrightTimeout:
        seen = pg.evaluate("""() => ({ nodes: (app.graph?.nodes || []).map((n) => [n.id, n.type]),
            workflow: app.extensionManager?.workflow?.activeWorkflow?.path ?? null })""")
        raise AssertionError(f"node {node_id} of {name!r} got no state in 60 s; the editor has {seen}") from None
    return pg.evaluate(f"""() => {{ const n = app.graph.getNodeById({node_id});
        const panel = n.widgets.find((w) => w.name === "wanvolume_info").element;
        return {{...n.wanVolumeState, lines: panel.textContent}}; }}""")


def test_each_missing_file_shows_the_command_that_fetches_it(page, volume, tmp_path):
    pg, server = page
    models_dir = server.get_json("/wan_volume/status")["models_dir"]
    aside = tmp_path / "aside"
    aside.mkdir()
    seen = []
    for i, (path, node_id, kind, name) in enumerate(cases()):
        entry = top_entry(name)
        shutil.move(str(volume / entry), str(aside / entry))
        try:
            state = shown(pg, server.url, json.loads(path.read_text()), node_id, f"hints-{i}")
        finally:
            shutil.move(str(aside / entry), str(volume / entry))
        wanted = (profiles.fetch_hint(name, models_dir, kind) if kind == "lora" else
                  auto_set.fix_command(auto_set.choice_of(name), models_dir))
        assert wanted.startswith("python wanvolume.py preload --profile "), wanted
        assert state["state"] == "missing", (path.stem, name, state)
        assert state["command"] == wanted, (path.stem, name, state["command"])
        assert f"fetch: {wanted}" in state["lines"], (path.stem, name, state["lines"])   # in the node's panel
        seen.append((path.stem, name))
    assert len(seen) == 10      # 4 workflows: 4 sets, 4 kissing LoRAs, 2 distill LoRAs
