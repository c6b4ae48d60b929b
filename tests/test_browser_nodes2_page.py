"""The page that tests/test_browser_nodes2.py drives: one chromium page on a real ComfyUI, the
renderer switched through the frontend's own setting, and what a node's panel shows read back.
(No tests here: the helpers live apart so the test file reads as the checks it makes.)"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ARTIFACTS
from helpers import REPO
from test_browser import CHROMIUM, LAUNCH_ARGS, TINY, load, set_widgets

SETTING = "Comfy.VueNodes.Enabled"

# What the node's panel (web/js/node_info.js) shows and where, and what the canvas draws for it.
PANEL_JS = """async (id) => {
  const node = app.graph.getNodeById(id);
  app.canvas.centerOnNode(node);
  const drawn = [];
  const proto = CanvasRenderingContext2D.prototype, fill = proto.fillText;
  proto.fillText = function (t, ...rest) { drawn.push(String(t)); return fill.call(this, t, ...rest); };
  try { app.canvas.draw(true, true); } finally { proto.fillText = fill; }
  // the DOM follows the canvas a frame later (the frontend places DOM widgets after drawing)
  for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
  const el = node.widgets.find((w) => w.name === 'wanvolume_info').element;
  const vue = document.querySelector(`[data-node-id="${id}"]`);
  let box;
  if (vue) {
    const b = vue.getBoundingClientRect();
    box = [b.left, b.top, b.right, b.bottom];
  } else {
    const c = app.canvas.canvas.getBoundingClientRect(), s = app.canvas.ds.scale;
    const [x, y] = app.canvas.ds.convertOffsetToCanvas(node.pos);
    box = [c.left + x, c.top + y, c.left + x + node.size[0] * s, c.top + y + node.size[1] * s];
  }
  const r = el.getBoundingClientRect();
  const text = (sel) => [...el.querySelectorAll(sel)].map((e) => e.textContent);
  const pill = el.querySelector('.wv-state'), code = el.querySelector('code');
  const shown = (e) => !!e && e.checkVisibility() && e.getBoundingClientRect().height > 0;
  return {
    type: node.comfyClass, state: node.wanVolumeState || null, badge: node.wanVolumeBadge?.text || null,
    node: {wanVolumeLoraReport: node.wanVolumeLoraReport || null, wanVolumeRunReport: node.wanVolumeRunReport || null},
    visible: shown(el), rect: [r.left, r.top, r.right, r.bottom], box,
    vue_nodes: !!document.querySelector('[data-node-id]'), in_vue_node: !!vue && vue.contains(el),
    node_text: vue ? vue.innerText : '', drawn,
    pill: pill?.textContent ?? null, pill_visible: shown(pill),
    lines: text('.wv-section-state .wv-text'), command: code?.textContent ?? null,
    command_select: code ? getComputedStyle(code).userSelect : null,
    lora_report: text('.wv-section-lora .wv-text')[0] ?? null, run_report: text('.wv-section-run .wv-text'),
  };
}"""


def panel(pg, node_id: int) -> dict:
    """What node ``node_id``'s panel shows, where, and what the canvas draws (see PANEL_JS)."""
    pg.wait_for_timeout(150)          # a frame for the renderer to place the centred node
    return pg.evaluate(PANEL_JS, node_id)


def renderers(new_frontend: bool) -> list:
    """Both renderers on frontend 1.45; classic only on 1.32 (its Nodes 2.0 was a preview)."""
    skip = pytest.mark.skip(reason="Nodes 2.0 is checked on ComfyUI 0.28's frontend (1.45)")
    return ["classic", pytest.param("nodes2", marks=() if new_frontend else skip)]


def run_from_editor(pg) -> dict:
    """Queue the open graph as the Run button does and wait for the end of the run."""
    return pg.evaluate("""async () => {
      const api = window.comfyAPI.api.api;
      const done = new Promise((resolve) => {
        api.addEventListener('execution_success', () => resolve({ok: true}));
        api.addEventListener('execution_error', (e) => resolve({ok: false, error: e.detail}));
      });
      await app.queuePrompt(0, 1);
      return await done;
    }""")


class Page:
    """One editor page; the renderer is switched with the frontend's own setting."""

    def __init__(self, pg, server, image_name: str) -> None:
        self.pg, self.server, self.image_name = pg, server, image_name
        self.object_info = server.get_json("/object_info")

    @classmethod
    @contextmanager
    def open(cls, server):
        if not CHROMIUM.exists():
            pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser tests")
        from playwright.sync_api import sync_playwright

        server.request("/settings", json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                       {"Content-Type": "application/json"})
        image_name = server.upload_image(REPO / "assets" / "two_people.png")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
            pg = context.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack or ''}"))
            pg.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
            pg.goto(server.url)
            pg.wait_for_function("() => window.app && app.graph && app.vueAppReady && app.extensionManager",
                                 timeout=120_000)
            page = cls(pg, server, image_name)
            try:
                yield page
            finally:
                page.use("classic")       # the setting is the server's: leave it as other tests expect
                browser.close()
            ours = [e for e in errors if "/extensions/ComfyUI-WanVolume/" in e]
            assert not ours, "errors from web/js/: " + "\n".join(ours)

    def use(self, renderer: str) -> None:
        on = renderer == "nodes2"
        self.pg.evaluate("async ([key, on]) => { await app.extensionManager.setting.set(key, on); }",
                         [SETTING, on])
        if on:
            self.pg.wait_for_function(
                "() => app.graph.nodes.length === 0 || document.querySelector('[data-node-id]')", timeout=20_000)
        else:
            self.pg.wait_for_function("() => !document.querySelector('[data-node-id]')", timeout=20_000)
        self.pg.wait_for_timeout(300)

    def load_workflow(self, ui: dict, name: str) -> None:
        """app.loadGraphData as the workflow browser does; waits for the loader's state."""
        self.pg.evaluate("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }", [ui, name])
        self.pg.wait_for_function(
            "() => app.graph.nodes.filter(n => ['WanVolumeModelLoader', 'WanVolumeLoraApply']"
            ".includes(n.comfyClass)).every(n => n.wanVolumeState)", timeout=20_000)
        self.pg.keyboard.press("Escape")       # the frontend's missing-models notice, if any
        self.pg.wait_for_timeout(300)

    def tiny_ui(self, path: Path) -> dict:
        ui = set_widgets(load(path), self.object_info, TINY)
        for node in ui["nodes"]:
            if node["type"] == "LoadImage":
                node["widgets_values"][0] = self.image_name
        return ui

    def set_widget(self, node_id: int, name: str, value) -> None:
        """Change a widget as a pick from its list does: value, then its callback."""
        self.pg.evaluate("""([id, name, value]) => {
          const w = app.graph.getNodeById(id).widgets.find((w) => w.name === name);
          w.value = value; w.callback?.(value);
        }""", [node_id, name, value])

    def copy_command(self, node_id: int) -> str:
        """Click the panel's copy button; what the clipboard then holds."""
        button = self.pg.evaluate_handle("""(id) => {
          const node = app.graph.getNodeById(id);
          app.canvas.centerOnNode(node);
          return node.widgets.find((w) => w.name === 'wanvolume_info').element.querySelector('.wv-copy');
        }""", node_id)
        self.pg.wait_for_timeout(150)
        button.as_element().click()
        self.pg.wait_for_function("(b) => b.textContent === 'copied'", arg=button, timeout=5_000)
        return self.pg.evaluate("() => navigator.clipboard.readText()")

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"browser_{name}.png"
        self.pg.mouse.move(1200, 960)
        self.pg.wait_for_timeout(200)
        self.pg.screenshot(path=str(path))
        return path
