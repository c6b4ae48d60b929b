"""Video writing round trips with the real bundled ffmpeg."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wan_engine import video
from wan_engine.errors import InvalidInput


def frames(n=9, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, w, dtype=np.float32)[None, None, :, None]
    return np.clip(base + rng.normal(0, 0.02, (n, h, w, 3)).astype(np.float32), 0, 1)


@pytest.mark.parametrize("fmt,fps", [("h264-mp4", 16.0), ("webm", 24.0), ("h265-mp4", 16.0)])
def test_round_trip_frames_size_fps(tmp_path, fmt, fps):
    path = video.write_video(frames(), tmp_path / f"v.{video.FORMATS[fmt].extension}", fps=fps, fmt=fmt)
    facts = video.probe(path)
    assert (facts.frames, facts.width, facts.height) == (9, 64, 48)
    assert facts.fps == pytest.approx(fps, rel=1e-3)


def test_content_survives_encoding(tmp_path):
    src = frames()
    path = video.write_video(src, tmp_path / "v.mp4", crf=10)
    back = video.read_frames(path).astype(np.float32) / 255.0
    assert back.shape == src.shape
    assert np.abs(back - src).mean() < 0.03


def test_odd_size_is_padded_not_empty(tmp_path):
    path = video.write_video(frames(h=47, w=63), tmp_path / "odd.mp4")
    facts = video.probe(path)
    assert (facts.width, facts.height, facts.frames) == (64, 48, 9)


def test_metadata_round_trip(tmp_path):
    workflow = {"nodes": [{"id": 1, "widgets_values": ["a=b; c#d\\e", "line\nbreak"]}], "links": []}
    prompt = {"4": {"class_type": "WanVolumeSampler", "inputs": {"prompt": "k144ing kissing"}}}
    path = video.write_video(frames(), tmp_path / "m.mp4", metadata={"workflow": workflow, "prompt": prompt})
    tags = video.read_metadata(path)
    assert json.loads(tags["workflow"]) == workflow
    assert json.loads(tags["prompt"]) == prompt


def test_bad_inputs(tmp_path):
    with pytest.raises(InvalidInput, match="format = 'gif'"):
        video.write_video(frames(), tmp_path / "x.gif", fmt="gif")
    with pytest.raises(InvalidInput, match="images = "):
        video.write_video(np.zeros((4, 4)), tmp_path / "x.mp4")


# short ids: pytest 8.0 puts the whole id in PYTEST_CURRENT_TEST, which ffmpeg inherits (E2BIG)
@pytest.mark.parametrize("text", ["a" * 131_072, "\U0001F48B" * 100_000, "两个人相视而笑" * 4_300,
                                  "=;#\\\n[chapter]\n" * 20_000],
                         ids=["ascii", "emoji", "cjk", "escapes"])
def test_metadata_of_any_size(tmp_path, text):
    """Beyond the 128 KiB per-argument limit of execve (MAX_ARG_STRLEN): written via an ffmetadata file."""
    workflow = {"nodes": [], "extra": {"note": text}}
    path = video.write_video(frames(n=2), tmp_path / "big.mp4", metadata={"workflow": workflow, "prompt": text})
    tags = video.read_metadata(path)
    assert tags["prompt"] == text and json.loads(tags["workflow"]) == workflow


@pytest.mark.parametrize("fmt", list(video.FORMATS))
def test_interrupt_leaves_no_file(tmp_path, fmt):
    path = tmp_path / f"v.{video.FORMATS[fmt].extension}"
    seen = []

    def interrupt(done, total):
        seen.append(done)
        if done == 3:
            raise KeyboardInterrupt("interrupted")      # ComfyUI's interrupt also raises from here

    with pytest.raises(KeyboardInterrupt):
        video.write_video(frames(), path, fmt=fmt, on_progress=interrupt)
    assert seen == [1, 2, 3] and not list(tmp_path.iterdir())


def test_encoder_error_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(video.FORMATS, "h264-mp4", video.FORMATS["h264-mp4"].__class__(
        "mp4", "libx264", "yuv420p", 51, ("-preset", "no-such-preset")))
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        video.write_video(frames(), tmp_path / "v.mp4")
    assert not list(tmp_path.iterdir())


def test_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "v.mp4"
    states = []
    video.write_video(frames(), path, on_progress=lambda d, t: states.append(path.exists()))
    assert states and not any(states) and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
