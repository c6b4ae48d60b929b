"""One owner of a pipeline's LoRA state, exact fuse/unfuse, and T2V LoRAs on the I2V model.

- Any history of strengths and fuse switches, two LoRAs, bf16 weights, ending at strength 0:
  every weight of the DiT equals the base bit for bit (fusing backs up and restores; peft's
  unmerge subtracted in bf16 and drifted).
- The fuse backups exist only while fused and cost one copy of each fused weight.
- A T2V LoRA (no ``k_img``/``v_img``) under fp8 storage loads (diffusers' zero ``add_k_proj`` /
  ``add_v_proj`` layers are not in the file) and, without fp8, gives no warning.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from lora_builders import distill_lora, distill_style_lora
from wan_engine.load.assemble import LoadedPipeline
from wan_engine.load.fp8 import enable_fp8_storage
from wan_engine.lora import apply as lora
from wan_engine.lora.state import state_of
from wan_engine.store.find import ModelSet
from test_lora_formats import as_format, canonical, components, merged_reference, run, write  # noqa: F401


def loaded_as(components, dtype: torch.dtype, fp8: bool = False) -> LoadedPipeline:
    from diffusers import WanImageToVideoPipeline

    transformer = copy.deepcopy(components["transformer"]).to(dtype)
    if fp8:
        enable_fp8_storage(transformer, dtype)
    pipe = WanImageToVideoPipeline(**dict(components, transformer=transformer))
    return LoadedPipeline(key=("t",), model_set=ModelSet(name="tiny", layout="diffusers", root=Path(".")),
                          pipe=pipe, dtype=dtype, device=torch.device("cpu"), offload="none",
                          load_seconds=0.0)


def weights(transformer) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in transformer.named_parameters()
            if "lora_" not in n}


HISTORY = (   # (strength of A, strength of B, fuse)
    (0.8, 0.0, True), (0.8, 0.5, True), (-0.3, 0.5, False), (1.0, 1.0, True), (0.35, -0.7, True),
    (0.35, -0.7, False), (0.6, 0.0, True), (0.0, 1.7, True), (0.0, 0.0, True), (1.2, 0.9, True),
    (0.0, 0.0, False),
)


def test_fuse_history_in_bf16_ends_on_the_base_weights_bit_for_bit(components, tmp_path):
    loaded = loaded_as(components, torch.bfloat16)
    t = components["transformer"]
    pa = write(tmp_path, "a_distill", distill_lora(t, "lightx2v", rank=16, seed=1))   # peft + patches
    pb = write(tmp_path, "b_plain", as_format(canonical(seed=2), "wan_AB"))              # peft only
    base = weights(loaded.pipe.transformer)
    drift_seen = False
    for a, b, fuse in HISTORY:
        lora.activate(loaded, (lora.LoraUse(str(pa), a), lora.LoraUse(str(pb), b)), fuse=fuse)
        now = weights(loaded.pipe.transformer)
        q = "blocks.0.attn1.to_q.weight"
        assert torch.equal(now[q], base[q]) != bool(fuse and (a or b)), (a, b, fuse)   # fused: merged
        drift_seen |= fuse and bool(a or b)
    assert drift_seen
    assert not state_of(loaded).fused
    after = weights(loaded.pipe.transformer)
    for name, value in base.items():
        assert torch.equal(after[name], value), f"{name} drifted from the base weights"
    lora.activate(loaded, (lora.LoraUse(str(pa), 0.0), lora.LoraUse(str(pb), 0.0)), fuse=True)
    assert all(torch.equal(v, base[n]) for n, v in weights(loaded.pipe.transformer).items())


def test_fuse_backups_live_only_while_fused(components, tmp_path):
    loaded = loaded_as(components, torch.bfloat16)
    t = components["transformer"]
    path = write(tmp_path, "distill", distill_style_lora(t, seed=3))
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    state = state_of(loaded)
    unfused = set(state.patcher.backup)                     # the full-delta patches only
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),), fuse=True)
    fused = set(state.patcher.backup) - unfused
    layers = state.peft_layers[lora.adapter_name(path)]
    assert fused == {f"{layer}.weight" for layer in layers} and len(layers) == 12 * 2
    live = dict(loaded.pipe.transformer.named_parameters())
    cost = sum(state.patcher.backup[n].nbytes for n in fused)
    assert cost == sum(live[n.replace(".weight", ".base_layer.weight")].nbytes for n in fused)
    assert all(state.patcher.backup[n].device.type == "cpu" for n in fused)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.5),))
    assert set(state.patcher.backup) == unfused


@pytest.mark.parametrize("fp8", [False, True])
def test_t2v_lora_on_the_i2v_model(components, tmp_path, caplog, fp8):
    loaded = loaded_as(components, torch.float32, fp8=fp8)
    canon = {k: v for k, v in canonical(seed=13).items() if "_img" not in k}
    path = write(tmp_path, "t2v", as_format(canon, "wan_AB"))
    base = run(loaded.pipe.transformer)
    with caplog.at_level(logging.WARNING, logger="wan_engine.lora"):
        lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    assert lora.report_for(loaded, path).status == "full"
    assert [r.getMessage() for r in caplog.records
            if r.name.startswith("wan_engine.lora") and r.levelno >= logging.WARNING] == []
    out = run(loaded.pipe.transformer)
    assert (out - base).abs().mean() > 1e-2, "the LoRA changed nothing"
    ref = components["transformer"]
    if fp8:   # the reference computes with the same fp8-rounded Linear weights
        ref = copy.deepcopy(ref)
        for name, module in ref.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("blocks."):
                module.weight.data = module.weight.data.to(torch.float8_e4m3fn).float()
    torch.testing.assert_close(out, merged_reference(ref, [(canon, 1.0)]), atol=2e-4, rtol=1e-4)
