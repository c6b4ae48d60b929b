"""The pack's editor UI on both of the frontend's node renderers, in Debian's chromium (Playwright).

ComfyUI 0.28's frontend (1.45) draws nodes either on the canvas (classic) or as DOM elements
("Nodes 2.0", setting ``Comfy.VueNodes.Enabled``); 0.3.75's (1.32) is checked classic. On each
renderer, for the shipped workflows on a volume without their files and for the tiny workflow
after a run from the editor, every piece is looked for where that renderer shows it:

- the state (ready / missing / damaged ... , "plan" when known): the title badge drawn on the canvas
  (classic), the panel's pill inside the node's DOM element (Nodes 2.0), never a frozen "…";
- the detail and the fetch command (selectable, with a copy button that copies it);
- after a run, the LoRA report and the run report lines;

in the node's panel (web/js/node_info.js, a DOM widget), which must be visible and lie inside the
node: inside its DOM element in Nodes 2.0, inside its rectangle on the canvas in the classic one.
Switching the setting with the graph open keeps all of it. Screenshots go to the artifacts dir.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_browser import NEW_FRONTEND, TINY, UI_WORKFLOWS, load, set_widgets
from test_browser_nodes2_page import Page, panel, renderers, run_from_editor

pytestmark = [pytest.mark.browser, pytest.mark.server]

PACK_PANEL_TYPES = ("WanVolumeModelLoader", "WanVolumeLoraApply")


@pytest.fixture(scope="module")
def page(comfy_server):
    with Page.open(comfy_server) as pg:
        yield pg


def node_ids(ui: dict, *types: str) -> list[int]:
    return [n["id"] for n in ui["nodes"] if n["type"] in types]


def assert_in_node(seen: dict, renderer: str) -> None:
    """The panel is shown, inside the node, with no stale badge, where the renderer shows nodes."""
    assert seen["visible"], seen
    left, top, right, bottom = seen["rect"]
    bl, bt, br, bb = seen["box"]
    assert bl - 1 <= left and right <= br + 1 and bt - 1 <= top and bottom <= bb + 1, seen
    if renderer == "nodes2":
        assert seen["in_vue_node"], "the panel is not inside the node's DOM element"
        assert "…" not in seen["node_text"], "a badge frozen at its first words"
    else:
        assert not seen["vue_nodes"], "Nodes 2.0 elements while the classic renderer is on"


@pytest.mark.parametrize("renderer", renderers(NEW_FRONTEND))
@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_missing_files_show_state_and_fetch_command(page, renderer, path):
    """A volume without the shipped files: each loader and LoRA node says missing, where it
    searched, and the exact command, selectable, with a copy button that copies it."""
    page.use(renderer)
    ui = load(path)
    page.load_workflow(ui, path.stem)
    for node_id in node_ids(ui, *PACK_PANEL_TYPES):
        seen = panel(page.pg, node_id)
        state = seen["state"]
        assert state["state"] == "missing", (path.stem, node_id, state)
        assert_in_node(seen, renderer)
        what = "set" if seen["type"] == "WanVolumeModelLoader" else "LoRA"
        badge = f"⚠ {what} missing: see WanVolume panel"
        if renderer == "nodes2":
            assert seen["pill"] == badge and seen["pill_visible"], seen
        else:   # drawn in the title; the panel's pill would say it twice
            assert badge in seen["drawn"], f"badge not drawn on the canvas: {seen['drawn'][:30]}"
            assert seen["pill"] == badge and not seen["pill_visible"], seen
        assert seen["lines"][0] == state["detail"] and state["detail"].startswith("not in ")
        assert seen["command"] == state["command"]
        assert state["command"].startswith("python wanvolume.py preload --profile ")
        assert seen["command_select"] == "all"           # one click selects the whole command
    if path == UI_WORKFLOWS[0]:
        loader = node_ids(ui, "WanVolumeModelLoader")[0]
        assert page.copy_command(loader) == panel(page.pg, loader)["state"]["command"]
        page.shot(f"nodes2_{renderer}_missing")


@pytest.mark.parametrize("renderer", renderers(NEW_FRONTEND))
def test_after_a_run_everything_shows(page, renderer):
    """The tiny workflow run from the editor: set and LoRA ready, the LoRA report, the run report."""
    page.use(renderer)
    path = UI_WORKFLOWS[0]
    # another LoRA strength per renderer: a cached LoRA node would send no report again
    ui = set_widgets(page.tiny_ui(path), page.object_info,
                     {"WanVolumeLoraApply": {"strength": 1.0 if renderer == "classic" else 0.9}})
    page.load_workflow(ui, f"{path.stem}_run_{renderer}")
    result = run_from_editor(page.pg)
    assert result["ok"], result
    page.pg.wait_for_function(
        "() => app.graph.nodes.find(n => n.comfyClass === 'WanVolumeVideoCombine')?.wanVolumeRunReport",
        timeout=30_000)
    for node_id in node_ids(ui, *PACK_PANEL_TYPES):
        seen = panel(page.pg, node_id)
        assert seen["state"]["state"] == "ready", seen["state"]
        assert_in_node(seen, renderer)
        what = "set" if seen["type"] == "WanVolumeModelLoader" else "LoRA"
        if what == "set":         # the plan the run used, from the status read again after it
            plan = page.server.get_json("/wan_volume/status")["memory_plan"]
            page.pg.wait_for_function(f"() => app.graph.getNodeById({node_id}).wanVolumeState.plan", timeout=20_000)
            seen = panel(page.pg, node_id)
            assert seen["badge"] == f"✔ set ready · plan {plan['mode']}", seen["badge"]
            assert seen["lines"] == [plan["summary"]], seen["lines"]
        badge = seen["badge"]
        assert badge.startswith(f"✔ {what} ready"), badge
        if renderer == "nodes2":
            assert seen["pill"] == badge and seen["pill_visible"]
        else:
            assert badge in seen["drawn"]
        if what == "LoRA":
            report = seen["lora_report"]
            assert report and report.startswith("✔ ") and " layers matched (" in report, seen
            assert report == seen["node"]["wanVolumeLoraReport"]["text"]
    (combine,) = node_ids(ui, "WanVolumeVideoCombine")
    seen = panel(page.pg, combine)
    assert_in_node(seen, renderer)
    first, phases = seen["node"]["wanVolumeRunReport"]["lines"]
    assert seen["run_report"] == [first, phases], seen
    assert first.startswith("run ") and " s · " in first and "sample " in phases
    # and the video still plays in the node, with the panel beside it
    page.pg.wait_for_function(f"""() => {{
      const v = document.querySelector('[data-node-id="{combine}"] video')
        || app.graph.getNodeById({combine}).videoContainer?.querySelector('video');
      return v && v.readyState >= 2 && v.checkVisibility();
    }}""", timeout=30_000)
    page.shot(f"nodes2_{renderer}_run")


def test_switching_the_setting_keeps_every_piece(page):
    """Graph open, the setting switched back and forth: each time the panels are in the nodes and
    a new model set chosen in Nodes 2.0 changes the pill (not a badge frozen at mount)."""
    if not NEW_FRONTEND:
        pytest.skip("Nodes 2.0 is checked on ComfyUI 0.28's frontend (1.45)")
    path = UI_WORKFLOWS[0]
    ui = load(path)
    page.use("classic")
    page.load_workflow(ui, f"{path.stem}_switch")
    (loader,) = node_ids(ui, "WanVolumeModelLoader")
    for renderer in ("nodes2", "classic", "nodes2"):
        page.use(renderer)
        seen = panel(page.pg, loader)
        assert_in_node(seen, renderer)
        assert seen["command"] == seen["state"]["command"] != ""
    page.set_widget(loader, "model_set", TINY["WanVolumeModelLoader"]["model_set"])
    page.pg.wait_for_function(f"() => app.graph.getNodeById({loader}).wanVolumeState.state === 'ready'",
                              timeout=20_000)
    seen = panel(page.pg, loader)
    assert seen["pill"].startswith("✔ set ready") and seen["command"] is None, seen
    page.use("classic")
    seen = panel(page.pg, loader)
    assert_in_node(seen, "classic")
    assert any(t.startswith("✔ set ready") for t in seen["drawn"])


def test_saved_workflow_keeps_its_shape(page):
    """The panel is no input: the prompt equals the API twin and widgets_values keep their length."""
    path = UI_WORKFLOWS[0]
    ui = load(path)
    page.use("nodes2" if NEW_FRONTEND else "classic")
    page.load_workflow(ui, f"{path.stem}_shape")
    prompt = page.pg.evaluate("async () => (await app.graphToPrompt()).output")
    twin = load(Path(path).parent / "api" / path.name)
    assert {k: v["inputs"] for k, v in prompt.items()} == {k: v["inputs"] for k, v in twin.items()}
    saved = page.pg.evaluate("() => app.graph.serialize().nodes.map(n => [n.id, n.widgets_values])")
    wanted = {n["id"]: n.get("widgets_values") for n in ui["nodes"]}
    for node_id in node_ids(ui, *PACK_PANEL_TYPES, "WanVolumeVideoCombine"):
        assert dict(saved)[node_id] == wanted[node_id], node_id
