"""Nothing leaks from one run to the next on a resident pipeline: same inputs, same frames.

The engine half (no server); tests/test_server_same_inputs.py runs the same through ComfyUI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_request
from wan_engine.sample import decode, sampling, speed

# 128x96 with 64 px tiles: the decode tiles, and a VAE left tiled would also ENCODE the start
# image tiled (diffusers' Wan VAE tiles an encode wider or taller than the tile).
A = dict(width=128, height=96, frames=5, steps=2, seed=11, tiles=decode.TileSettings(True, 64, 32))


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(7).integers(0, 255, (96, 128, 3), dtype=np.uint8))


def test_decode_leaves_the_vae_tiling_as_it_found_it(loaded):
    vae = loaded.pipe.vae
    before = {name: getattr(vae, name) for name in decode.TILING_ATTRS}
    assert before["use_tiling"] is False
    latents = torch.randn(1, 16, 2, 12, 16, generator=torch.Generator().manual_seed(0))
    seen = []
    handle = vae.decoder.register_forward_hook(lambda *_: seen.append(vae.use_tiling))
    try:
        decode.decode(vae, latents, decode.TileSettings(True, 64, 32))
    finally:
        handle.remove()
    assert seen and all(seen)                               # it did decode tiled
    assert {name: getattr(vae, name) for name in decode.TILING_ATTRS} == before


def test_decode_restores_tiling_when_it_fails(loaded, monkeypatch):
    vae = loaded.pipe.vae

    def boom(*_a, **_k):
        raise RuntimeError("decoder failed")

    monkeypatch.setattr(vae, "decode", boom)
    with pytest.raises(RuntimeError):
        decode.decode_once(vae, torch.zeros(1, 16, 1, 12, 16), decode.TileSettings(True, 64, 32),
                           torch.device("cpu"))
    assert vae.use_tiling is False


def test_same_inputs_same_frames_whatever_ran_before(loaded, image):
    first = sampling.sample(loaded, image, tiny_request(**A))
    others = [dict(seed=12), dict(width=96, height=64), dict(tiles=decode.TileSettings(True, 96, 48)),
              dict(tiles=decode.TileSettings(False)), dict(sampler="euler", cfg=1.0)]
    for change in others:
        sampling.sample(loaded, image, tiny_request(**(A | change)))
    sampling.sample(loaded, image, tiny_request(**A), options=speed.SpeedSettings(cache="first_block"))
    again = sampling.sample(loaded, image, tiny_request(**A))
    assert np.array_equal(first, again)
