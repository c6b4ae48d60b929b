"""The editor shows what a video cost under Video Combine (web/js/run_report.js), in Debian's chromium.

A server with WAN_VOLUME_PRICE_PER_HOUR set runs the shipped workflow from the editor; the node
then shows the report's two lines in its panel, and its video preview still plays although the
report's .json is listed beside the video under `images`. The page comes from test_browser.py.
"""
from __future__ import annotations

import shutil

import pytest

from comfy_headless import ComfyServer
from test_browser import UI_WORKFLOWS, Editor, browser, editor, media, run_tiny  # noqa: F401  (fixtures)
from wan_engine import report

pytestmark = [pytest.mark.browser, pytest.mark.server]

PRICE = 3.0
NODE = "app.graph.nodes.find(n => n.comfyClass === 'WanVolumeVideoCombine')"


@pytest.fixture(scope="module")
def comfy_server(tiny_volume, tmp_path_factory):   # this module's editor talks to a priced server
    server = ComfyServer(tmp_path_factory.mktemp("comfy_browser_priced"), tiny_volume,
                         extra_args=["--preview-method", "latent2rgb"],
                         env={report.ENV_PRICE: str(PRICE)}).start()
    yield server
    server.stop()


def test_the_report_shows_under_video_combine(editor: Editor):
    result = run_tiny(editor, UI_WORKFLOWS[0])
    output = result["executed"]["output"]
    (item,) = media(output)
    listed = [i["filename"] for i in output["images"]]
    assert listed == [item["filename"], item["filename"].replace(".mp4", ".json")]
    (sent,) = output["wanvolume_report"]
    page = editor.page
    page.wait_for_function(f"() => {NODE}.wanVolumeRunReport", timeout=20_000)
    shown = page.evaluate(f"() => {NODE}.wanVolumeRunReport")
    assert shown["seconds"] == sent["seconds"] and shown["cost_usd"] == sent["cost_usd"]
    cents = sent["cost_usd"] * 100
    first, phases = shown["lines"]
    assert first.startswith(f"run {sent['seconds']:.2f} s · ") and f"at ${PRICE:g}/h" in first
    assert (f"{cents:.3f}¢" if cents < 1 else f"{cents:.2f}¢") in first and "peak GPU n/a" in first
    for name in ("load", "lora", "text", "image", "sample", "decode", "write"):
        assert f"{name} " in phases, phases
    steps = len(next(p for p in sent["phases"] if p["name"] == "sample")["step_seconds"])
    assert f"({steps} steps)" in phases

    # On the node: both lines in its panel (a DOM widget), visible, inside the node's rectangle.
    seen = page.evaluate(f"""async () => {{
      const node = {NODE};
      app.canvas.centerOnNode(node);
      app.canvas.draw(true, true);
      for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
      const lines = [...node.widgets.find((w) => w.name === 'wanvolume_info').element
        .querySelectorAll('.wv-section-run .wv-text')];
      const c = app.canvas.canvas.getBoundingClientRect(), s = app.canvas.ds.scale;
      const [x, y] = app.canvas.ds.convertOffsetToCanvas(node.pos);
      return {{texts: lines.map((l) => l.textContent), bottom: c.top + y + node.size[1] * s,
               rects: lines.map((l) => [l.checkVisibility(), l.getBoundingClientRect().bottom])}};
    }}""")
    assert seen["texts"] == shown["lines"], seen
    assert all(vis and bottom <= seen["bottom"] + 1 for vis, bottom in seen["rects"]), seen

    # The preview still plays the video: the .json entry does not replace or break it.
    video_js = f"""() => {{
      const v = {NODE}.videoContainer?.querySelector('video');
      return v && {{src: v.src, readyState: v.readyState, error: v.error && v.error.code}};
    }}"""
    page.wait_for_function(f"() => {{ const r = ({video_js})(); return r && r.readyState >= 2; }}",
                           timeout=30_000)
    v = page.evaluate(video_js)
    assert f"filename={item['filename']}" in v["src"] and v["error"] is None
    shot = editor.shot("run_report")
    shutil.copy(shot, shot.parent / "editor_run_report.png")
