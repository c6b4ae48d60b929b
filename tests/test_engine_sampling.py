"""Engine unit tests on the tiny model: request rules, sizes, determinism, LoRA, tiled decode."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_LORA, tiny_request
from lora_builders import FileReads
from spies import Calls
from wan_engine.load import assemble
from wan_engine.sample import decode, sampling
from wan_engine.lora import apply as lora
from wan_engine.errors import InvalidInput


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))


@pytest.mark.parametrize("field,value,fragment", [
    ("width", 100, "multiple of 16"), ("height", 0, "multiple of 16"), ("frames", 80, "4k+1"),
    ("frames", 300, "from 1 to 257"), ("steps", 0, "at least 1"), ("cfg", 0.5, "at least 1.0"),
    ("shift", 0.0, "at least 0.1"), ("prompt", "  ", "is empty"),
])
def test_check_request_names_field_value_and_fix(field, value, fragment):
    with pytest.raises(InvalidInput) as err:
        sampling.check_request(tiny_request(**{field: value}))
    msg = str(err.value)
    assert msg.startswith(f"{field} = {value!r}") and fragment in msg and "Fix:" in msg


def test_tile_rules():
    with pytest.raises(InvalidInput, match="tile_overlap = 64"):
        sampling.check_request(tiny_request(tiles=decode.TileSettings(True, 64, 64)))
    with pytest.raises(InvalidInput, match="tile_size = 72"):
        sampling.check_request(tiny_request(tiles=decode.TileSettings(True, 72, 8)))
    sampling.check_request(tiny_request(tiles=decode.TileSettings(False, 72, 64)))  # off: not checked


@pytest.mark.parametrize("frames,expected", [(1, (1, 1)), (80, (77, 81)), (81, (81, 81)), (82, (81, 85))])
def test_nearest_valid_frames(frames, expected):
    assert sampling.nearest_valid_frames(frames) == expected


def test_fit_image_covers_and_crops():
    img = Image.new("RGB", (300, 100), "red")
    out = sampling.fit_image(img, 64, 48)
    assert out.size == (64, 48)
    tall = sampling.fit_image(Image.new("L", (50, 400)), 832, 480)
    assert tall.size == (832, 480) and tall.mode == "RGB"


def test_sample_shape_range_and_determinism(loaded, image):
    steps = []
    a = sampling.sample(loaded, image, tiny_request(), on_step=lambda i, n, lat: steps.append((i, n)))
    b = sampling.sample(loaded, image, tiny_request())
    c = sampling.sample(loaded, image, tiny_request(seed=4))
    assert a.shape == (5, 48, 64, 3) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert steps == [(1, 2), (2, 2)]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_model_stays_resident(loaded, monkeypatch):
    reads = Calls(monkeypatch, assemble, "layout_named")   # a build reads the volume
    again = assemble.load(loaded.model_set, "fp32")
    assert again is loaded and reads.count == 0


def test_interrupt_between_steps_stops_the_run(loaded, image):
    class Stop(Exception):
        pass

    seen = []

    def on_step(i, n, lat):
        seen.append(i)
        raise Stop

    with pytest.raises(Stop):
        sampling.sample(loaded, image, tiny_request(steps=4), on_step=on_step)
    assert seen == [1]


def test_lora_on_off_strength_and_no_reload(loaded, image, tiny_volume, monkeypatch):
    path = str(tiny_volume / TINY_LORA)
    lora.activate(loaded, ())
    base = sampling.sample(loaded, image, tiny_request())
    reads, loads = FileReads(monkeypatch), Calls(monkeypatch, assemble, "layout_named")
    lora.activate(loaded, (lora.LoraUse(path, 1.0),))
    on = sampling.sample(loaded, image, tiny_request())
    reads_after_first = reads.count
    lora.activate(loaded, (lora.LoraUse(path, 0.5),))
    half = sampling.sample(loaded, image, tiny_request())
    lora.activate(loaded, (lora.LoraUse(path, 0.0),))
    zero = sampling.sample(loaded, image, tiny_request())
    lora.activate(loaded, ())
    off = sampling.sample(loaded, image, tiny_request())
    assert not np.allclose(on, base, atol=1e-3)
    assert not np.allclose(half, on, atol=1e-3) and not np.allclose(half, base, atol=1e-3)
    assert np.array_equal(zero, base) and np.array_equal(off, base)
    assert loads.count == 0                                  # base model never reloaded
    assert reads.count == reads_after_first <= 1             # file read at most once


def test_strength_range():
    lora.check_strength(2.0)
    with pytest.raises(InvalidInput, match="strength = 2.5"):
        lora.check_strength(2.5)


def test_tiled_decode_shape_finite_and_progress(loaded):
    vae = loaded.pipe.vae
    torch.manual_seed(0)
    latents = torch.randn(1, 16, 2, 16, 16)          # 128x128 px, 5 frames
    tiles = decode.TileSettings(True, 64, 32)
    calls = []
    tiled = decode.decode(vae, latents, tiles, on_progress=lambda d, t: calls.append((d, t)))
    whole = decode.decode(vae, latents, decode.TileSettings(enabled=False))
    assert tiled.shape == whole.shape == (1, 3, 5, 128, 128)
    assert torch.isfinite(tiled).all()
    expected = decode.decoder_calls(vae, latents, tiles)
    assert expected == 4 * 4 * 2 and calls[-1] == (expected, expected) and len(calls) == expected
    assert not torch.equal(tiled, whole)                # tiling really engaged
    assert (tiled - whole).abs().mean() < 0.25          # ...and blends into the same picture
