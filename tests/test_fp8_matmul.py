"""The opt-in fp8 compute path (speed option fp8_matmul): fp8-stored Linear layers as one
``torch._scaled_mm`` each. Lossy by design (activations are quantised to fp8), so it is checked
against the upcast path within fp8's error; off, it must change nothing. Runs on the CPU
(oneDNN); on a GPU it needs compute capability 8.9+."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_request
from wan_engine import tiny_model
from wan_engine.errors import InvalidInput
from wan_engine.load import assemble, fp8
from wan_engine.sample import sampling, speed
from wan_engine.store import find


class ScaledMmCalls:
    """Counts torch._scaled_mm calls while installed."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        real = torch._scaled_mm

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(torch, "_scaled_mm", counted)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_scaled_linear_is_the_upcast_linear_within_fp8_error(dtype):
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(96, 64, generator=gen) * 0.05).to(fp8.STORAGE_DTYPE)
    scale, bias = torch.tensor(0.37), torch.randn(96, generator=gen).to(dtype)
    x = torch.randn(2, 7, 64, generator=gen).to(dtype)
    want = torch.nn.functional.linear(x.float(), weight.float() * scale, bias.float())
    got = fp8.scaled_linear(x, weight, scale, bias)
    assert got.shape == (2, 7, 96) and got.dtype == dtype
    error = (got.float() - want).norm() / want.norm()
    assert 0 < error < 0.05, float(error)   # the activations' fp8 rounding: a few percent, not zero


def test_fp8_matmul_runs_the_dit_in_fp8_and_switching_it_off_restores_the_upcast(volume_env, monkeypatch):
    image = Image.fromarray(np.random.default_rng(4).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assemble.release()
    loaded = assemble.load(find.get_model_set(tiny_model.TINY_SET_NAME), "bf16", fp8_storage=True)
    try:
        calls = ScaledMmCalls(monkeypatch)
        ref = sampling.sample(loaded, image, tiny_request(seed=5))
        assert calls.count == 0                                   # default: the upcast path
        layers = fp8.set_fp8_matmul(loaded.pipe.transformer, False)
        assert layers == 0
        out = sampling.sample(loaded, image, tiny_request(seed=5),
                              options=speed.SpeedSettings(fp8_matmul=True))
        on = loaded.pipe.transformer._wanvolume_fp8_matmul
        assert on[0] and on[1] >= 8 and calls.count == on[1] * 2 * 2   # every layer, 2 steps x (cond, uncond)
        diff = np.abs(out - ref)
        # measured on the tiny model (24 layers, 96 calls): max 0.083, mean 0.0056 of 1; tolerance:
        assert 0 < diff.mean() < 0.02 and diff.max() < 0.25, (float(diff.max()), float(diff.mean()))
        before = calls.count
        again = sampling.sample(loaded, image, tiny_request(seed=5))
        assert calls.count == before and np.array_equal(again, ref)   # off again: bit for bit the upcast
        weight = loaded.pipe.transformer.blocks[0].attn1.to_q.weight
        assert weight.dtype == fp8.STORAGE_DTYPE                      # never upcast in place
    finally:
        assemble.release()


def test_fp8_matmul_without_fp8_storage_names_the_loader_switch(loaded):
    image = Image.new("RGB", (64, 48))
    with pytest.raises(InvalidInput) as err:
        sampling.sample(loaded, image, tiny_request(), options=speed.SpeedSettings(fp8_matmul=True))
    text = str(err.value)
    assert text.startswith("fp8_matmul = True") and "fp8_storage" in text and "loader" in text


@pytest.mark.parametrize("cap,name,refused", [((8, 6), "NVIDIA A40", True), ((8, 0), "NVIDIA A100", True),
                                              ((8, 9), "NVIDIA L40S", False), ((9, 0), "NVIDIA H200", False)])
def test_fp8_matmul_on_a_gpu_without_fp8_tensor_cores_is_refused_naming_it(monkeypatch, cap, name, refused):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: name)
    reason = fp8.matmul_capable(torch.device("cuda"))
    assert (reason is not None) == refused
    if refused:
        assert name in reason and f"{cap[0]}.{cap[1]}" in reason and "8.9" in reason
        with pytest.raises(InvalidInput, match="fp8_matmul = True"):
            speed.apply_fp8_matmul(torch.nn.Linear(16, 16), True, torch.device("cuda"))
