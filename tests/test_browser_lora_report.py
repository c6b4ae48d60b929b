"""The editor shows how a LoRA matched after a run (web/js/lora_report.js), in Debian's chromium.

A LoRA with two modules for layers the tiny model lacks: after the run from the editor, the LoRA node
shows the amber counts line in its panel and a warning toast gives the counts. The page comes from test_browser.py.
"""
from __future__ import annotations

import pytest
from safetensors.torch import save_file

from test_browser import UI_WORKFLOWS, Editor, browser, editor, set_widgets  # noqa: F401  (fixtures)
from test_browser_nodes2_page import run_from_editor
from test_lora_report import BOGUS, partial_lora

pytestmark = [pytest.mark.browser, pytest.mark.server]

PARTIAL = "loras/zz_report_browser_partial_lora.safetensors"
AMBER = "rgb(255, 179, 0)"     # #ffb300, as the panel's computed style says it


@pytest.fixture(scope="module")
def partial_file(tiny_volume):
    """On the volume before the page reads /object_info; removed after (other tests list LoRAs)."""
    sd, fitting = partial_lora()
    path = tiny_volume / PARTIAL
    save_file(sd, str(path))
    yield fitting
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def page_editor(partial_file, editor) -> Editor:   # partial_file first: the LoRA is in the dropdown
    return editor


def test_partial_lora_shows_amber_counts_on_the_node(page_editor, partial_file):
    ed, page = page_editor, page_editor.page
    assert PARTIAL in str(ed.object_info["WanVolumeLoraApply"]["input"]["required"]["lora"])
    ui = set_widgets(ed.tiny_ui(UI_WORKFLOWS[0]), ed.object_info, {"WanVolumeLoraApply": {"lora": PARTIAL}})
    assert ed.load_workflow(ui, "lora_report_partial") == []
    # The toast comes when the LoRA node runs and lives 10 s: the rest of the run can outlast it.
    page.evaluate("""() => { window.wvToasts = [];
      new MutationObserver(() => document.querySelectorAll('.p-toast-message-warn').forEach((t) => {
        if (!wvToasts.includes(t.innerText)) wvToasts.push(t.innerText); }))
        .observe(document.body, {childList: true, subtree: true, characterData: true}); }""")
    result = run_from_editor(page)
    assert result["ok"], result
    total = partial_file + len(BOGUS)
    text = f"⚠ {partial_file}/{total} layers matched"
    page.wait_for_function("() => app.graph.nodes.find(n => n.comfyClass === 'WanVolumeLoraApply')"
                           ".wanVolumeLoraReport", timeout=20_000)
    report = page.evaluate(
        "() => app.graph.nodes.find(n => n.comfyClass === 'WanVolumeLoraApply').wanVolumeLoraReport")
    assert (report["status"], report["matched"], report["total"], report["lora"]) == \
        ("partial", partial_file, total, PARTIAL)
    assert report["text"].startswith(text)

    # The toast with the counts, as it was shown.
    toasts = [t for t in page.evaluate("() => wvToasts") if f"{partial_file}/{total} layers" in t]
    assert toasts and "blocks.99." in toasts[0], page.evaluate("() => wvToasts")
    # On the node: the counts in amber in its panel (a DOM widget), the file badge still drawn.
    drawn = page.evaluate("""async () => {
      const node = app.graph.nodes.find(n => n.comfyClass === 'WanVolumeLoraApply');
      app.canvas.centerOnNode(node);
      const seen = [];
      const proto = CanvasRenderingContext2D.prototype, fill = proto.fillText;
      proto.fillText = function (t, ...rest) { seen.push(String(t)); return fill.call(this, t, ...rest); };
      try { app.canvas.draw(true, true); } finally { proto.fillText = fill; }
      for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
      const line = node.widgets.find((w) => w.name === 'wanvolume_info').element
        .querySelector('.wv-section-lora .wv-text');
      return {texts: seen, line: line?.textContent, color: line && getComputedStyle(line).color,
              visible: !!line?.checkVisibility() && line.getBoundingClientRect().height > 0};
    }""")
    assert drawn["line"].startswith(text) and drawn["visible"], drawn
    assert drawn["color"] == AMBER, f"counts not amber: {drawn['color']}"
    assert "✔ LoRA ready" in drawn["texts"], "the file badge (loader_badge.js) is gone"

    ed.shot("lora_report_partial")


def test_a_wan22_report_shows_one_line_per_expert(page_editor):
    """Wan2.2 (two experts): the node's output carries one report per expert (nodes/lora_node.py);
    the panel shows each, named, with the CLIP-branch keys that had no target."""
    page = page_editor.page
    base = {"lora": None, "status": "full", "total": 40, "lora_format": "wan (Comfy)", "deltas": 0,
            "skipped": 0, "summary": "s"}
    lines = page.evaluate("""async (base) => {
      const node = app.graph.nodes.find(n => n.comfyClass === 'WanVolumeLoraApply');
      base.lora = String(node.widgets.find((w) => w.name === 'lora').value);
      node.onExecuted({wanvolume_lora: [
        {...base, matched: 40, expert: 'high', no_target: 4},
        {...base, matched: 38, status: 'partial', expert: 'low', no_target: 4}]});
      for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
      return [...node.widgets.find((w) => w.name === 'wanvolume_info').element
        .querySelectorAll('.wv-section-lora .wv-text')].map((l) => l.textContent);
    }""", base)
    assert len(lines) == 2, lines
    assert lines[0].startswith("✔ high-noise expert: 40/40 layers matched") and "4 CLIP-branch" in lines[0]
    assert lines[1].startswith("⚠ low-noise expert: 38/40 layers matched"), lines
