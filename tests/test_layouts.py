"""One tiny model written in every layout: scanning, and the same seed -> the same frames."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import layout_writers as lw
from helpers import tiny_request
from wan_engine.load import assemble
from wan_engine.sample import sampling
from wan_engine.store import find as volume
from wan_engine.load.layouts import LoadSpec, layout_named, pth
from wan_engine.store.scan import wan_original
from wan_engine.tiny_model import build_components

DIFFUSERS = "Wan2.1-I2V-tiny-Diffusers"
WAN = "Wan2.1-I2V-tiny-720P"
DIT_VARIANTS = ("bf16", "fp16", "fp8_e4m3fn", "fp8_scaled")
# fp8 keeps 3 mantissa bits of each DiT Linear weight. On the tiny random model (frames in
# [0, 1], 2 steps) that was measured as max |diff| 0.077 / mean 0.0034 (fp8_e4m3fn) and
# 0.029 / 0.0020 (fp8_scaled). Stated tolerance: max < 0.12 and mean < 0.01.
FP8_FRAME_TOL, FP8_MEAN_TOL = 0.12, 0.01


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("layouts")
    comps = lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))
    lw.write_diffusers(d / DIFFUSERS, comps)
    lw.write_wan(d / WAN, comps)
    lw.write_comfy(d, comps, DIT_VARIANTS)
    lw.record_manifest(d, [d / WAN / f for k, f in wan_original.FILES.items() if k != "tokenizer"])
    return d


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))


def sets_in(d: Path) -> dict[str, volume.ModelSet]:
    return {s.name: s for s in volume.scan_dir(d)}


def frames(model_set: volume.ModelSet, image) -> np.ndarray:
    loaded = assemble.load(model_set, "bf16")
    out = sampling.sample(loaded, image, tiny_request(seed=5))
    assemble.release()
    return out


def test_scanner_finds_every_layout(models_dir):
    sets = sets_in(models_dir)
    assert sets[DIFFUSERS].layout == "diffusers" and sets[WAN].layout == "wan"
    for v in DIT_VARIANTS:
        s = sets[f"comfy/wan2.1_i2v_720p_tiny_{v}"]
        assert s.layout == "comfy" and s.complete and "umt5_xxl_fp16" in s.label
    assert all(s.complete for s in sets.values())


def test_comfy_set_says_what_is_missing_and_works_in_any_dir(models_dir, tmp_path):
    comfy_root = tmp_path / "ComfyUI" / "models"
    shutil.copytree(models_dir / "diffusion_models", comfy_root / "diffusion_models")
    shutil.copytree(models_dir / "text_encoders", comfy_root / "text_encoders")
    (comfy_root / "diffusion_models" / "not_i2v.safetensors").write_bytes(
        (models_dir / "vae" / "wan_2.1_vae.safetensors").read_bytes())   # a VAE, not a DiT
    sets = sets_in(comfy_root)
    assert len(sets) == len(DIT_VARIANTS), "only I2V DiTs make sets"
    s = sets["comfy/wan2.1_i2v_720p_tiny_bf16"]
    assert not s.complete
    assert set(s.missing) == {"clip_vision/clip_vision_h.safetensors", "vae/wan_2.1_vae.safetensors"}
    assert "tokenizer" not in s.components   # built from the umt5 file's spiece_model
    assert "missing" in s.label and "clip_vision_h" in s.label
    found = {m.name for m in volume.find_model_sets(extra_dirs=[comfy_root])}
    assert "comfy/wan2.1_i2v_720p_tiny_fp16" in found


def test_wan_set_missing_shard_and_pth(models_dir, tmp_path):
    root = tmp_path / WAN
    shutil.copytree(models_dir / WAN, root)
    (root / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    (root / wan_original.FILES["image_encoder"]).unlink()
    s = sets_in(tmp_path)[WAN]
    assert s.missing == ["diffusion_pytorch_model-00002-of-00003.safetensors",
                         wan_original.FILES["image_encoder"]]


def test_component_weights_identical_across_layouts(models_dir):
    sets = sets_in(models_dir)
    ref = assemble.build_diffusers(sets[DIFFUSERS], torch.bfloat16)       # from_pretrained
    for name in (DIFFUSERS, WAN, "comfy/wan2.1_i2v_720p_tiny_bf16", "comfy/wan2.1_i2v_720p_tiny_fp16"):
        pipe = layout_named(sets[name].layout).build(sets[name], LoadSpec(torch.bfloat16))  # fastload
        for comp in ("transformer", "text_encoder", "image_encoder", "vae"):
            a, b = getattr(ref, comp).state_dict(), getattr(pipe, comp).state_dict()
            assert a.keys() == b.keys(), (name, comp)
            for k in a:
                assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (name, comp, k)
        assert getattr(pipe.text_encoder.config, "relative_attention_max_distance") == 128


def test_same_seed_same_frames_in_every_layout(models_dir, image):
    sets = sets_in(models_dir)
    ref = frames(sets[DIFFUSERS], image)
    for name in (WAN, "comfy/wan2.1_i2v_720p_tiny_bf16", "comfy/wan2.1_i2v_720p_tiny_fp16"):
        np.testing.assert_array_equal(frames(sets[name], image), ref, err_msg=name)
    for v in ("fp8_e4m3fn", "fp8_scaled"):
        diff = np.abs(frames(sets[f"comfy/wan2.1_i2v_720p_tiny_{v}"], image) - ref)
        assert diff.max() < FP8_FRAME_TOL and diff.mean() < FP8_MEAN_TOL, (v, float(diff.max()))


def test_fp8_scaled_applies_scales(models_dir):
    s = sets_in(models_dir)["comfy/wan2.1_i2v_720p_tiny_fp8_scaled"]
    pipe = layout_named("comfy").build(s, LoadSpec(torch.float32))
    ref = build_components(seed=0)["transformer"]
    lw.representable({"t": ref})
    w, w0 = pipe.transformer.blocks[0].attn1.to_q.weight, ref.blocks[0].attn1.to_q.weight
    rel = ((w - w0).abs().max() / w0.abs().max()).item()
    assert rel < 2 ** -4, f"fp8_scaled weight off by {rel:.3f} of its range: scales not applied?"
    assert w.abs().max() < 1.0 < 100 * w0.abs().max(), "weights look unscaled"


def test_pth_needs_matching_manifest_or_trust(models_dir, tmp_path):
    root = tmp_path / WAN
    shutil.copytree(models_dir / WAN, root)     # copied outside the manifest's models dir
    target = root / wan_original.FILES["vae"]
    with pytest.raises(pth.PthRefused, match="no manifest entry") as err:
        pth.load_pth(target)
    assert "preload --profile wan21-i2v-720p" in str(err.value) and str(target) in str(err.value)
    lw.record_manifest(tmp_path, [target])
    assert "encoder.conv1.weight" in pth.load_pth(target)
    data = bytearray(target.read_bytes())
    data[-30] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(pth.PthRefused, match="SHA-256 differs"):
        pth.load_pth(target)
    pth.check_pth(target, LoadSpec(None, trust_pth=True))   # the operator trusts it: no hash check


@pytest.mark.parametrize("version,ok", [("2.14.1+cu130", True), ("2.10.0", True), ("2.9.1", False),
                                        ("2.5.1+cpu", False)])
def test_pth_refused_on_torch_without_safe_weights_only(version, ok):
    if ok:
        pth.check_torch(version)
    else:
        with pytest.raises(pth.PthRefused, match=re.escape(f"torch = '{version}'") + ".*CVE"):
            pth.check_torch(version)
