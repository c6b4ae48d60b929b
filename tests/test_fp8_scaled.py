"""ComfyUI's fp8_scaled DiT files: each layer computes with exactly the weight ComfyUI's own scaled
fp8 Linear computes with (tests/comfy_fp8_oracle.py runs ComfyUI's code), whether the weights are
upcast at load (bf16, fp32) or kept in fp8 with their scales (fp8 storage)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import layout_writers as lw
from helpers import REPO
from wan_engine.load import fp8
from wan_engine.load.keymaps import dit
from wan_engine.load.layouts import components
from wan_engine.tiny_model import build_components


def ours(file_key: str) -> str:
    return dit.wan_to_diffusers(dit.strip_prefix(file_key, dit.PREFIXES))


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny fp8_scaled DiT file as ComfyUI ships them, and its tensors under our key names."""
    path = tmp_path_factory.mktemp("fp8-scaled") / "wan2.1_i2v_tiny_fp8_scaled.safetensors"
    sd = lw.comfy_dit(build_components(seed=0)["transformer"], "fp8_scaled")
    save_file(sd, str(path))
    return path, {ours(k): v for k, v in sd.items() if k.split(".")[-1] != fp8.MARKER}


def comfy_weights(path: Path, dtype: str, out: Path) -> dict[str, torch.Tensor]:
    subprocess.run([sys.executable, str(REPO / "tests" / "comfy_fp8_oracle.py"), str(path), dtype, str(out)],
                   check=True, capture_output=True, timeout=600)
    return {ours(k): v for k, v in load_file(str(out)).items()}


def layers(model, expected: dict) -> list[tuple[str, torch.nn.Module]]:
    modules = dict(model.named_modules())
    found = [(k, modules[k[: -len(".weight")]]) for k in expected]
    assert len(found) >= 12
    return found


def test_fp8_storage_keeps_the_files_fp8_and_scales_and_computes_comfyuis_weights(scaled, tmp_path):
    path, file_sd = scaled
    expected = comfy_weights(path, "bfloat16", tmp_path / "comfy_bf16.safetensors")
    model = components.read_dit([path], torch.bfloat16, fp8_storage=True)
    x = torch.randn(3, 5, file_sd["blocks.0.attn1.to_q.weight"].shape[1], dtype=torch.bfloat16)
    for key, module in layers(model, expected):
        assert module.weight.dtype == torch.float8_e4m3fn, key
        # the file's own fp8 bytes: never scaled and rounded to fp8 again
        assert torch.equal(module.weight.view(torch.uint8), file_sd[key].view(torch.uint8)), key
        assert torch.equal(fp8.upcast_weight(module), expected[key]), key
        assert module.weight.dtype == torch.float8_e4m3fn, key           # back to fp8 after a call
        if module.in_features == x.shape[-1]:                           # the real forward, hooks and all
            with torch.no_grad():
                assert torch.equal(module(x), torch.nn.functional.linear(x, expected[key], module.bias)), key


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_upcast_at_load_gives_comfyuis_weights(scaled, tmp_path, dtype):
    path, _ = scaled
    expected = comfy_weights(path, dtype, tmp_path / f"comfy_{dtype}.safetensors")
    model = components.read_dit([path], getattr(torch, dtype))
    for key, module in layers(model, expected):
        assert module.weight.dtype == getattr(torch, dtype), key
        assert torch.equal(module.weight.data, expected[key]), key


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("setting", ["auto", "cast", "table", "bits"])
@pytest.mark.parametrize("src", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("dst", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("scale", [0.0123, 3.0e5, 1.0e35, -0.5])
def test_conversion_is_torchs_cast_bit_for_bit(src, dst, scale, setting, device, monkeypatch):
    """Every byte (NaNs and subnormals too), by each path WAN_VOLUME_FP8_UPCAST can name and by the
    measured choice (auto), with scales the bit move handles and one it must leave to the table
    (1e35 overflows its factor): always torch's own cast times the scale, on each device here."""
    from wan_engine.load import fastload, upcast

    monkeypatch.setenv(upcast.ENV_UPCAST, setting)
    monkeypatch.setattr(upcast, "CALIBRATION_VALUES", 4096)
    moves, tables = [], []
    real_move, real_table = upcast._move_bits, upcast.convert_by_table
    monkeypatch.setattr(upcast, "_move_bits", lambda raw, out, f: (moves.append(raw.numel()), real_move(raw, out, f)))
    monkeypatch.setattr(upcast, "convert_by_table",
                        lambda raw, out, sc=None: (tables.append(raw.numel()), real_table(raw, out, sc)))
    raw = torch.arange(256, dtype=torch.int32).to(torch.uint8).repeat(300).to(device).view(src)
    out = torch.empty(raw.numel(), dtype=dst, device=device)
    fastload.convert(raw, out)
    assert torch.equal(upcast.as_bits(out), upcast.as_bits(raw.to(dst)))
    scale_t = torch.tensor(scale)
    fastload.convert(raw, out, scale_t)
    assert torch.equal(upcast.as_bits(out), upcast.as_bits(raw.to(dst) * scale_t.to(device, dst)))
    moved, tabled = (len([n for n in calls if n == raw.numel()]) for calls in (moves, tables))
    if setting == "cast":
        assert moved == tabled == 0                   # torch's own cast, both times
    elif setting == "table":
        assert (moved, tabled) == (0, 2)
    elif setting == "bits" and src == torch.float8_e5m2:
        assert (moved, tabled) == (0, 2)              # no bit move for e5m2: the table
    elif setting == "bits" and scale in (0.0123, -0.5):
        assert (moved, tabled) == (2, 0)              # the bit move, unscaled and scaled
    elif setting == "bits" and dst != torch.float16:
        assert (moved, tabled) == (1, 1)              # 2**120 x the scale overflows: the table


def test_chunked_overlapped_read_in_inference_mode(scaled, tmp_path):
    """Many small chunks (read one, convert the other) under ComfyUI's inference mode."""
    from wan_engine.load import fastload

    path, file_sd = scaled
    scales = fp8.weight_scales({k: v for k, v in file_sd.items() if k.endswith(fp8.SCALE_SUFFIX)})
    with torch.inference_mode():
        got = fastload.load_file(path, ours, lambda _k, d: torch.bfloat16 if d.is_floating_point else d,
                                 chunk=4096, scales=scales)
    for key, weight in file_sd.items():
        if key in scales:
            assert torch.equal(got[key], weight.to(torch.bfloat16) * scales[key].to(torch.bfloat16)), key
        elif weight.is_floating_point():
            assert torch.equal(got[key], weight.to(torch.bfloat16)), key
