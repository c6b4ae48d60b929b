"""Loading a model set: per-component dtypes, byte progress, residency and release."""
from __future__ import annotations

import pytest
import torch

from wan_engine.load import assemble
from wan_engine import tiny_model
from wan_engine.store import find as volume
from wan_engine.errors import InvalidInput
from spies import Calls


def test_bf16_load_dtypes_and_byte_progress(volume_env, monkeypatch):
    s = volume.get_model_set(tiny_model.TINY_SET_NAME)
    assemble.release()
    seen = []
    loaded = assemble.load(s, "bf16", on_progress=lambda done, total: seen.append((done, total)))
    pipe = loaded.pipe
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32 and pipe.image_encoder.dtype == torch.float32
    total = s.size_bytes()
    assert seen and all(t == total for _, t in seen)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and dones[-1] >= 0.95 * total
    reads = Calls(monkeypatch, assemble, "layout_named")   # a build reads the volume
    assert assemble.load(s, "bf16") is loaded and reads.count == 0
    assemble.load(s, "fp32")                     # other precision: replaces the resident set
    assert reads.count == 1 and assemble.resident().dtype == torch.float32


@pytest.mark.parametrize("precision,offload,field", [("int4", "none", "precision"), ("bf16", "disk", "offload")])
def test_bad_load_args(precision, offload, field):
    with pytest.raises(InvalidInput, match=f"{field} = "):
        assemble.check_load_args(precision, offload)
