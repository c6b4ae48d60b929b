"""The README's API example runs as written against a real server (names pointed at the tiny set)."""
from __future__ import annotations

import re

import pytest

from helpers import REPO, TINY_LORA
from wan_engine import tiny_model, video

pytestmark = pytest.mark.server


def readme_api_example() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"## Calling it from a program.*?```python\n(.*?)```", text, re.S).group(1)


def test_readme_api_example_downloads_the_mp4(comfy_server, tmp_path, monkeypatch):
    code = readme_api_example()
    swaps = {
        'COMFY = "http://127.0.0.1:8188"': f'COMFY = "{comfy_server.url}"',
        'open("couple.png", "rb")': f'open("{REPO / "assets" / "two_people.png"}", "rb")',
        'wf["4"]["inputs"]["seed"] = 7': (
            'wf["4"]["inputs"]["seed"] = 7\n'
            f'wf["2"]["inputs"]["model_set"] = "{tiny_model.TINY_SET_NAME}"\n'
            f'wf["3"]["inputs"]["lora"] = "{TINY_LORA}"\n'
            'wf["4"]["inputs"].update(width=64, height=48, frames=5, steps=2)'),
    }
    for old, new in swaps.items():
        assert old in code, f"README example changed: {old!r} not found"
        code = code.replace(old, new)
    monkeypatch.chdir(REPO)
    code = code.replace('open("out.mp4", "wb")', f'open("{tmp_path / "out.mp4"}", "wb")')
    exec(compile(code, "README.md", "exec"), {})
    facts = video.probe(tmp_path / "out.mp4")
    assert (facts.frames, facts.width, facts.height, facts.fps) == (5, 64, 48, 16.0)
