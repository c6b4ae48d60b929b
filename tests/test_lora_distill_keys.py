"""The step-distill LoRAs people download, in their exact key forms, against ComfyUI's own merge.

Each form of ``lora_builders.DISTILL_FORMS`` (lightx2v's own files with ``blocks.N.diff_m`` /
``head.diff_m``, Kijai's rank 4..256 extractions, the newer Wan2.1-Distill-Loras file with a full
delta on the head) is applied and compared weight by weight with ``comfy.lora.load_lora`` +
``calculate_weight`` run by ComfyUI itself (tests/comfy_lora_oracle.py). ComfyUI leaves the
``diff_m`` keys unloaded; the engine applies them to ``<block>.modulation`` as LightX2V does.
A module carrying both a full ``.diff`` and a low-rank pair gets the ``.diff`` only, as in ComfyUI.
"""
from __future__ import annotations

import logging

import pytest
import torch

import layout_writers as lw
from comfy_lora_oracle import comfy_merge
from lora_builders import DISTILL_FORMS, PREFIX, distill_lora
from wan_engine.load.keymaps import dit
from wan_engine.lora import apply as lora
from test_lora_formats import components, loaded, run, write  # noqa: F401  (fixtures)

STRENGTH = 0.8
# fp32 tiny DiT, bf16 LoRA tensors: the engine and ComfyUI both compute in float32 (measured max
# difference 0 to 5e-7 on the weights)
WEIGHTS = dict(atol=1e-5, rtol=1e-5)


def params(loaded_pipe) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p for n, p in loaded_pipe.pipe.transformer.named_parameters()
            if "lora_" not in n}


def comfy_weights(transformer, path, tmp_path) -> tuple[dict[str, torch.Tensor], list[str]]:
    merged, not_loaded = comfy_merge(lw.wan_dit(transformer), path, STRENGTH, tmp_path)
    return {dit.wan_to_diffusers(k): v for k, v in merged.items()}, not_loaded


def modulation_deltas(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers parameter -> delta, for every ``<block>.diff_m`` key (LightX2V's mapping)."""
    return {dit.wan_to_diffusers(k.removeprefix(PREFIX).removesuffix(".diff_m") + ".modulation"): t
            for k, t in sd.items() if k.endswith(".diff_m")}


@pytest.mark.parametrize("form,rank", [("lightx2v", 64), ("kijai", 4), ("kijai", 256),
                                       ("distill_loras", 64)])
def test_distill_lora_forms_match_comfyui(loaded, components, tmp_path, form, rank):
    assert form in DISTILL_FORMS
    t = components["transformer"]
    sd = distill_lora(t, form, rank=rank, seed=rank)
    path = write(tmp_path, f"{form}_rank{rank}_bf16", sd)
    comfy, not_loaded = comfy_weights(t, path, tmp_path)
    diff_m = modulation_deltas(sd)
    assert not_loaded == sorted(k for k in sd if k.endswith(".diff_m"))   # all ComfyUI ignores
    assert (form == "lightx2v") == bool(diff_m)

    lora.activate(loaded, (lora.LoraUse(str(path), STRENGTH),), fuse=True)
    report = lora.report_for(loaded, path)
    assert (report.status, report.unmatched, report.skipped, report.superseded) == ("full", 0, [], [])
    mine, base = params(loaded), dict(t.named_parameters())
    assert set(mine) == set(comfy)
    unchanged = set()
    for name, value in comfy.items():
        expected = value.reshape(mine[name].shape)
        if name in diff_m:        # ComfyUI left it as it was; LightX2V adds s * diff_m
            assert torch.equal(expected, base[name]), name
            expected = base[name] + STRENGTH * diff_m[name].float().reshape(expected.shape)
        if torch.equal(expected, base[name]):
            unchanged.add(name)
        torch.testing.assert_close(mine[name], expected, **WEIGHTS, msg=lambda m, n=name: f"{n}: {m}")
    # what these files leave alone: the patch conv, the image embedder's LayerNorms, and the
    # modulations where there is no diff_m
    untouched = {n for n in comfy if n.startswith(("patch_embedding.", "condition_embedder.image_embedder.norm"))}
    untouched |= set() if diff_m else {n for n in comfy if n.endswith("scale_shift_table")}
    assert unchanged == untouched
    fused = run(loaded.pipe.transformer)
    lora.activate(loaded, (lora.LoraUse(str(path), STRENGTH),))      # unfused: peft + patches
    torch.testing.assert_close(run(loaded.pipe.transformer), fused, atol=2e-4, rtol=1e-4)


def test_a_diff_replaces_a_low_rank_pair_on_the_same_layer_as_in_comfyui(loaded, components,
                                                                         tmp_path, caplog):
    """``head.head.diff`` next to ``head.head.lora_down`` (diffusers saw it in lightx2v's
    Wan2.2-Distill-Loras) and a block Linear with both: the ``.diff`` alone, ``.diff_b`` kept."""
    t = components["transformer"]
    sd = distill_lora(t, "kijai", seed=7)
    wan = lw.wan_dit(t)
    gen = torch.Generator().manual_seed(8)
    both = ("head.head", "blocks.0.self_attn.q")
    for module in both:
        sd[f"{PREFIX}{module}.diff"] = (torch.randn(wan[f"{module}.weight"].shape, generator=gen)
                                        * 0.05).to(torch.bfloat16)
    path = write(tmp_path, "diff_and_pair", sd)
    comfy, not_loaded = comfy_weights(t, path, tmp_path)
    assert not_loaded == []
    with caplog.at_level(logging.WARNING, logger="wan_engine.lora.formats"):
        lora.activate(loaded, (lora.LoraUse(str(path), STRENGTH),), fuse=True)
    report = lora.report_for(loaded, path)
    assert sorted(report.superseded) == sorted(PREFIX + m for m in both)
    assert "2 low-rank pairs replaced by a full .diff" in report.summary() and report.status == "full"
    assert sum("applying the .diff only" in r.getMessage() for r in caplog.records) == 2
    mine = params(loaded)
    for name in ("proj_out.weight", "proj_out.bias", "blocks.0.attn1.to_q.weight", "blocks.0.attn1.to_q.bias"):
        torch.testing.assert_close(mine[name], comfy[name].reshape(mine[name].shape), **WEIGHTS)
    for name, value in comfy.items():
        torch.testing.assert_close(mine[name], value.reshape(mine[name].shape), **WEIGHTS)
