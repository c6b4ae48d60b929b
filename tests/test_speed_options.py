"""Speed options on the CPU (attention, cache, block offload) and the decode's out-of-memory retry."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_request
from wan_engine.load import assemble
from wan_engine.sample import decode, sampling, speed
from wan_engine import tiny_model
from wan_engine.store import find as volume
from wan_engine.errors import InvalidInput, WanVolumeError

EULER8 = dict(sampler="euler", steps=8, cfg=1.0)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))


def test_attention_auto_is_native_on_cpu_and_logged(loaded, image, caplog):
    caplog.set_level(logging.INFO, logger="wan_engine.sample.speed")
    a = sampling.sample(loaded, image, tiny_request(**EULER8), options=speed.SpeedSettings(attention="auto"))
    assert "attention auto -> native on cpu" in caplog.text
    caplog.clear()
    b = sampling.sample(loaded, image, tiny_request(**EULER8))
    assert "attention auto" not in caplog.text      # unconnected speed: no choice was made
    assert np.array_equal(a, b)


def test_unconnected_speed_is_the_reference_path_whatever_is_installed(monkeypatch):
    """SageAttention installed on a capable GPU: the defaults still mean native SDPA, no cache, no compile."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (9, 0))
    monkeypatch.setattr(speed, "installed", lambda m: True)
    default = speed.SpeedSettings()
    assert (default.attention, default.compile, default.cache) == ("native", False, "none")
    assert speed.resolve_attention(default.attention, torch.device("cuda")) == "native"
    assert speed.resolve_attention("auto", torch.device("cuda")) == "sage"   # auto stays a choice


@pytest.mark.parametrize("name,device,fragment", [
    ("flash", "cpu", "needs a CUDA GPU"), ("_native_cudnn", "cpu", "needs a CUDA GPU"),
    ("sage", "cuda", "pip install sageattention"), ("flash", "cuda", "pip install flash-attn"),
    ("magic", "cpu", "is not one of the choices: 'auto', 'native'"),
])
def test_attention_that_cannot_run_names_the_fix(name, device, fragment):
    if device == "cuda" and speed.installed(speed.ATTENTION_BACKENDS[name][0]):
        pytest.skip(f"{name} is installed here")
    with pytest.raises(InvalidInput) as err:
        speed.resolve_attention(name, torch.device(device))
    assert str(err.value).startswith(f"attention = {name!r}") and fragment in str(err.value)


def test_auto_on_cuda_picks_the_fastest_installed_kernel_the_gpu_supports(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (9, 0))   # H100/H200
    monkeypatch.setattr(speed, "installed", lambda m: m in (None, "flash_attn"))
    assert speed.resolve_attention("auto", cuda) == "flash"
    monkeypatch.setattr(speed, "installed", lambda m: m in (None, "flash_attn", "flash_attn_interface"))
    assert speed.resolve_attention("auto", cuda) == "_flash_3"
    monkeypatch.setattr(speed, "installed", lambda m: m is None)
    assert speed.resolve_attention("auto", cuda) == "_native_cudnn"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (7, 5))   # T4: none of them
    monkeypatch.setattr(speed, "installed", lambda m: True)
    assert speed.resolve_attention("auto", cuda) == "native"


@pytest.mark.parametrize("cache", ["first_block", "taylorseer"])
def test_step_caches_run_on_cpu_and_switch_off_cleanly(loaded, image, cache):
    plain = sampling.sample(loaded, image, tiny_request(**EULER8))
    cached = sampling.sample(loaded, image, tiny_request(**EULER8),
                             options=speed.SpeedSettings(cache=cache, cache_threshold=0.5))
    again = sampling.sample(loaded, image, tiny_request(**EULER8))
    assert np.isfinite(cached).all() and cached.shape == plain.shape
    assert not np.array_equal(cached, plain)        # steps really were skipped or predicted
    assert np.array_equal(again, plain)             # "none" removes the cache exactly
    assert not loaded.pipe.transformer.is_cache_enabled


def test_cache_hooks_are_registered_once_per_configuration(loaded, image, monkeypatch):
    dit = loaded.pipe.transformer
    enabled = []
    real = dit.enable_cache
    monkeypatch.setattr(dit, "enable_cache", lambda config: (enabled.append(config), real(config))[1])
    options = speed.SpeedSettings(cache="first_block", cache_threshold=0.5)
    try:
        first = sampling.sample(loaded, image, tiny_request(**EULER8), options=options)
        sampling.sample(loaded, image, tiny_request(**EULER8, seed=9), options=options)
        again = sampling.sample(loaded, image, tiny_request(**EULER8), options=options)
        assert len(enabled) == 1                     # same configuration: state reset, no new hooks
        assert np.array_equal(first, again)          # ... and the reset state gives the same frames
        sampling.sample(loaded, image, tiny_request(**EULER8),
                        options=speed.SpeedSettings(cache="first_block", cache_threshold=0.4))
        assert len(enabled) == 2                     # another threshold: new hooks
    finally:
        sampling.sample(loaded, image, tiny_request(**EULER8))
    assert not dit.is_cache_enabled


@pytest.mark.parametrize("options,fp8,fld", [
    (speed.SpeedSettings(compile=True, cache="first_block"), False, "cache = 'first_block'"),
    (speed.SpeedSettings(compile=True, cache="mag"), False, "cache = 'mag'"),
    (speed.SpeedSettings(compile=True), True, "compile = True"),
])
def test_compile_with_a_cache_or_fp8_storage_is_refused_naming_both(options, fp8, fld):
    with pytest.raises(InvalidInput) as err:
        speed.check_combination(options, fp8)
    msg = str(err.value)
    assert msg.startswith(fld) and "compile cannot be combined with" in msg and "Fix:" in msg
    for good in err.value.suggested:                 # the suggested value makes the pair valid
        fixed = {"cache": {"cache": good}, "compile": {"compile": good}}[err.value.field]
        speed.check_combination(speed.SpeedSettings(**{**options.__dict__, **fixed}), fp8)
    speed.check_combination(speed.SpeedSettings(compile=True), False)
    speed.check_combination(speed.SpeedSettings(cache="first_block"), True)


def test_magcache_needs_calibration_then_uses_stored_ratios(loaded, image, tmp_path):
    ratios = tmp_path / "mag.json"
    with pytest.raises(WanVolumeError, match="mag_calibrate"):
        sampling.sample(loaded, image, tiny_request(**EULER8), options=speed.SpeedSettings(cache="mag"),
                        mag_ratios_file=ratios)
    calibrated = sampling.sample(loaded, image, tiny_request(**EULER8),
                                 options=speed.SpeedSettings(cache="mag_calibrate"), mag_ratios_file=ratios)
    stored = json.loads(ratios.read_text())
    assert stored["steps"] == 8 and len(stored["ratios"]) == 8
    plain = sampling.sample(loaded, image, tiny_request(**EULER8))
    assert np.array_equal(calibrated, plain)        # calibration skips nothing
    fast = sampling.sample(loaded, image, tiny_request(**EULER8),
                           options=speed.SpeedSettings(cache="mag", cache_threshold=1.0), mag_ratios_file=ratios)
    assert np.isfinite(fast).all() and not np.array_equal(fast, plain)


def test_compile_error_names_the_fix_without_a_compiler_or_triton(monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda _: None)
    with pytest.raises(WanVolumeError, match="install g\\+\\+"):
        speed.check_compile(torch.device("cpu"))
    monkeypatch.setattr(speed, "installed", lambda m: m != "triton")
    with pytest.raises(WanVolumeError, match="pip install triton"):
        speed.check_compile(torch.device("cuda"))


def test_block_offload_on_cpu_is_a_logged_fallback(volume_env, caplog):
    caplog.set_level(logging.WARNING, logger="wan_engine.load.assemble")
    assert "block" in assemble.OFFLOAD_MODES and "block" in assemble.OFFLOAD_HELP
    loaded = assemble.load(volume.get_model_set(tiny_model.TINY_SET_NAME), "fp32", offload="block")
    assert "offload=block needs a GPU" in caplog.text and loaded.offload == "block"
    assemble.release()


# -- decode: out of memory -> smaller tiles -> CPU -> a message saying what to lower --------------

def _oom_above(vae, monkeypatch, limit: int | None):
    """Make the VAE raise torch.OutOfMemoryError for tiles above ``limit`` px (None: always)."""
    real = vae.decode
    tried = []

    def fake(latents, **kw):
        size = vae.tile_sample_min_height if vae.use_tiling else 10 ** 6
        tried.append(size if vae.use_tiling else "whole")
        if limit is None or size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(latents, **kw)

    monkeypatch.setattr(vae, "decode", fake)
    return tried


def test_decode_oom_retries_with_smaller_tiles(loaded, monkeypatch, caplog):
    vae = loaded.pipe.vae
    latents = torch.randn(1, 16, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = decode.decode_once(vae, latents, decode.TileSettings(True, 64, 16), torch.device("cpu"))
    tried = _oom_above(vae, monkeypatch, 64)
    video = decode.decode(vae, latents, decode.TileSettings(True, 256, 64))
    assert tried == [256, 128, 64]
    assert torch.equal(video, expected)             # the 64 px attempt, overlap cut to 16
    assert "ran out of memory with 256 px tiles; retrying with 128 px tiles" in caplog.text
    tried.clear()
    decode.decode(vae, latents, decode.TileSettings(enabled=False))
    assert tried == ["whole", 256, 128, 64]


def test_decode_oom_everywhere_says_what_to_lower(loaded, monkeypatch):
    vae = loaded.pipe.vae
    _oom_above(vae, monkeypatch, None)
    with pytest.raises(WanVolumeError) as err:
        decode.decode(vae, torch.randn(1, 16, 2, 16, 16), decode.TileSettings(True, 128, 32))
    msg = str(err.value)
    assert "64 px tiles" in msg and "lower width/height or frames" in msg


def test_smaller_tiles_keep_rules():
    t = decode.TileSettings(True, 256, 64)
    seen = []
    while t is not None:
        seen.append((t.tile_size, t.overlap))
        assert t.tile_size % 16 == 0 and t.overlap % 8 == 0 and t.overlap < t.tile_size
        t = decode.smaller_tiles(t)
    assert seen == [(256, 64), (128, 32), (64, 16)]


def test_compile_does_not_recompile_when_only_seed_or_prompt_change(loaded, image):
    from dataclasses import replace

    from torch._dynamo.utils import counters

    req = tiny_request(sampler="euler", schedule="distill_4step", steps=4, cfg=1.0)
    eager = sampling.sample(loaded, image, req)
    counters.clear()
    try:
        compiled = sampling.sample(loaded, image, req, options=speed.SpeedSettings(compile=True))
        graphs = counters["stats"]["unique_graphs"]
        sampling.sample(loaded, image, replace(req, seed=99, prompt="two people kiss"),
                        options=speed.SpeedSettings(compile=True))
        assert graphs >= 1 and counters["stats"]["unique_graphs"] == graphs
        assert np.allclose(compiled, eager, atol=1e-4)
    finally:
        sampling.sample(loaded, image, req)          # compile off: eager blocks again
    assert all(b._compiled_call_impl is None for b in loaded.pipe.transformer.blocks)
    torch._dynamo.reset()
