"""The loader's switches: fp8 storage and trusting .pth files, passed through assemble.load."""
from __future__ import annotations

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
from wan_engine.load.layouts import build, pth
from wan_engine.store.scan import wan_original
from wan_engine.tiny_model import build_components

WAN = "Wan2.1-I2V-14B-720P"
FP8 = "comfy/wan2.1_i2v_720p_tiny_fp8_e4m3fn"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("options")
    comps = lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))
    lw.write_wan(d / WAN, comps)
    lw.write_comfy(d, comps, ("fp8_e4m3fn",))
    return d


def sets_in(d: Path) -> dict[str, volume.ModelSet]:
    return {s.name: s for s in volume.scan_dir(d)}


def test_fp8_storage_keeps_dit_weights_in_fp8_with_same_frames(models_dir):
    s = sets_in(models_dir)[FP8]
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    assemble.release()
    upcast = assemble.load(s, "bf16")
    assert upcast.pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    ref = sampling.sample(upcast, image, tiny_request(seed=5))
    stored = assemble.load(s, "bf16", fp8_storage=True)        # a different key: reloads
    assert stored is not upcast
    assert stored.pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    out = sampling.sample(stored, image, tiny_request(seed=5))
    assemble.release()
    # The file's Linear weights are fp8 already and only they are stored in fp8 (biases, norms and
    # embeddings stay in bf16): measured identical frames. Stated tolerance: max < 0.05, mean < 5e-3.
    diff = np.abs(out - ref)
    assert diff.max() < 0.05 and diff.mean() < 5e-3, (float(diff.max()), float(diff.mean()))
    again = assemble.load(s, "bf16")                           # the switch was for that load only
    assert again.pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assemble.release()


def test_trust_pth_switch_loads_unrecorded_pth(models_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(build.ENV_TRUST_PTH, raising=False)
    root = tmp_path / WAN
    shutil.copytree(models_dir / WAN, root)    # no manifest here: the preload did not record it
    s = sets_in(tmp_path)[WAN]
    assemble.release()
    with pytest.raises(pth.PthRefused, match="no manifest entry"):
        assemble.load(s, "fp32")
    loaded = assemble.load(s, "fp32", trust_pth=True)
    assert loaded.pipe.text_encoder is not None
    assemble.release()
    with pytest.raises(pth.PthRefused, match="no manifest entry"):   # trusted for that load only
        assemble.load(s, "fp32")
