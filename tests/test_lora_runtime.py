"""LoRAs cost nothing when off: no adapter code runs without an active LoRA, and the output is then
bit-equal to the model without LoRA; fusing merges the active adapters for the run and is undone
before strengths change."""
from __future__ import annotations

import pytest
import torch

from lora_builders import FileReads, distill_style_lora, merge_by_hand
from wan_engine.lora import apply as lora
from wan_engine.lora.patches import find_parameter
from wan_engine.lora.state import state_of
from test_lora_formats import as_format, canonical, components, loaded, run, write  # noqa: F401

FUSE_ROUND_TRIP = dict(atol=2e-5, rtol=0)   # fp32: fuse then unfuse; measured max 5.8e-7


class LoraCalls:
    """Counts forward calls of every peft ``lora_A`` layer, per adapter."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: dict[str, int] = {}
        self.handles = []
        for name, sub in module.named_modules():
            parent, _, adapter = name.rpartition(".")
            if parent.endswith("lora_A"):
                self.handles.append(sub.register_forward_hook(self._hook(adapter)))

    def _hook(self, adapter: str):
        def hook(*_):
            self.calls[adapter] = self.calls.get(adapter, 0) + 1
        return hook

    def take(self) -> dict[str, int]:
        calls, self.calls = self.calls, {}
        return calls


def test_no_adapter_code_runs_without_an_active_lora(loaded, components, tmp_path):
    fresh = run(components["transformer"])
    p1 = write(tmp_path, "one", as_format(canonical(31), "wan_AB"))
    p2 = write(tmp_path, "two", as_format(canonical(32), "musubi"))
    lora.activate(loaded, (lora.LoraUse(str(p1), 1.0), lora.LoraUse(str(p2), 0.8)))
    counter = LoraCalls(loaded.pipe.transformer)
    names = set(state_of(loaded).files)
    run(loaded.pipe.transformer)
    assert set(counter.take()) == names                       # both adapters ran
    lora.activate(loaded, (lora.LoraUse(str(p1), 0.0), lora.LoraUse(str(p2), 0.8)))
    run(loaded.pipe.transformer)
    assert set(counter.take()) == {lora.adapter_name(p2)}     # strength 0: that adapter is off
    for uses in ((), (lora.LoraUse(str(p1), 0.0),)):
        lora.activate(loaded, uses)
        out = run(loaded.pipe.transformer)
        assert counter.take() == {}, f"adapter code ran for {uses}"
        assert torch.equal(out, fresh), "not bit-equal to the model without LoRA"


def test_fuse_gives_the_unfused_output_and_undoes_itself(loaded, components, tmp_path, monkeypatch):
    t = components["transformer"]
    sd = distill_style_lora(t, seed=41)                       # peft part and weight patches
    path = write(tmp_path, "distill", sd)
    base = run(loaded.pipe.transformer)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.8),))
    unfused = run(loaded.pipe.transformer)
    counter = LoraCalls(loaded.pipe.transformer)
    reads = FileReads(monkeypatch)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.8, fuse=True),))   # the node's fuse_lora switch
    fused = run(loaded.pipe.transformer)
    assert counter.take() == {}, "a fused LoRA still runs its adapter layers"
    torch.testing.assert_close(fused, unfused, atol=2e-4, rtol=1e-4)
    lora.activate(loaded, (lora.LoraUse(str(path), -0.5, fuse=True),))  # exact strength change
    torch.testing.assert_close(run(loaded.pipe.transformer), run(merge_by_hand(t, sd, -0.5)),
                               atol=2e-4, rtol=1e-4)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.0, fuse=True),))
    off = run(loaded.pipe.transformer)
    assert counter.take() == {} and reads.count == 0
    torch.testing.assert_close(off, base, **FUSE_ROUND_TRIP)
    orig = dict(t.named_parameters())
    for name in state_of(loaded).patcher.backup:                     # full deltas: exact again
        assert torch.equal(find_parameter(loaded.pipe.transformer, name), orig[name]), name


@pytest.mark.parametrize("fuse", [False, True])
def test_stacked_loras_with_patches_on_the_same_weights(loaded, components, tmp_path, fuse):
    t = components["transformer"]
    a, b = distill_style_lora(t, seed=51), distill_style_lora(t, seed=52)
    pa, pb = write(tmp_path, "a", a), write(tmp_path, "b", b)
    lora.activate(loaded, (lora.LoraUse(str(pa), 0.6), lora.LoraUse(str(pb), -0.3)), fuse=fuse)
    ref = merge_by_hand(merge_by_hand(t, a, 0.6), b, -0.3)
    torch.testing.assert_close(run(loaded.pipe.transformer), run(ref), atol=3e-4, rtol=1e-4)
