"""Every key of a Wan LoRA applied with ComfyUI's semantics: full deltas (``.diff``, ``.diff_b``,
``.diff_m``) on any weight or bias, alpha/rank scaling, DoRA, the norm2/norm3 swap, modulation and
head; strength changes without re-reading; a replaced file re-read; a truncated file refused."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import layout_writers as lw
from lora_builders import ALPHA, PREFIX, RANK, FileReads, distill_style_lora, merge_by_hand
from wan_engine.lora import apply as lora
from wan_engine.lora.state import state_of
from wan_engine.errors import LoraMismatch, WanVolumeError
from wan_engine.load.keymaps import dit
from test_lora_formats import components, loaded, run, write  # noqa: F401  (fixtures)

# fp32 tiny DiT: measured max 1.3e-6 between runtime and merged outputs (LoRA effect: mean 0.78)
TIGHT = dict(atol=2e-4, rtol=1e-4)


def params(loaded_pipe) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p for n, p in loaded_pipe.pipe.transformer.named_parameters()
            if "lora_" not in n}


def test_every_weight_and_bias_applied_like_a_merge(loaded, components, tmp_path):
    sd = distill_style_lora(components["transformer"], seed=1)
    path = write(tmp_path, "distill", sd)
    base = run(loaded.pipe.transformer)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.7),))
    report = lora.report_for(loaded, path)
    modules = {k.rsplit(".", 2)[0] if ".lora_" in k else k.rsplit(".", 1)[0] for k in sd}
    with_delta = {k.rsplit(".", 1)[0] for k in sd if k.endswith((".diff", ".diff_b"))}
    assert (report.status, report.matched, report.unmatched, report.skipped) == ("full", len(modules), 0, [])
    assert report.patched == len(with_delta) and "full deltas" in report.summary()
    out = run(loaded.pipe.transformer)
    assert (out - base).abs().mean() > 1e-2, "the LoRA changed nothing"
    torch.testing.assert_close(out, run(merge_by_hand(components["transformer"], sd, 0.7)), **TIGHT)


def _dora_lora(transformer) -> dict[str, torch.Tensor]:
    """A DoRA on two Linear layers: magnitude on the input axis (LyCORIS) and on the output axis."""
    gen = torch.Generator().manual_seed(5)
    sd = {}
    wan = lw.wan_dit(transformer)
    for module, axis in (("blocks.1.self_attn.q", "in"), ("blocks.0.ffn.0", "out")):
        w = wan[f"{module}.weight"]
        base = PREFIX + module
        sd[f"{base}.lora_down.weight"] = torch.randn(RANK, w.shape[1], generator=gen) * 0.3
        sd[f"{base}.lora_up.weight"] = torch.randn(w.shape[0], RANK, generator=gen) * 0.3
        sd[f"{base}.alpha"] = torch.tensor(ALPHA)
        norm_axis = 0 if axis == "in" else 1
        magnitude = w.norm(dim=norm_axis, keepdim=True) * (1 + 0.2 * torch.rand(1, generator=gen))
        sd[f"{base}.dora_scale"] = magnitude
    sd[PREFIX + "blocks.0.norm3.diff"] = torch.randn(wan["blocks.0.norm3.weight"].shape, generator=gen) * 0.1
    return sd


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_distill_and_dora_match_comfyui_itself(loaded, components, tmp_path, strength):
    """The engine's weights equal ComfyUI's own ``load_lora`` + ``calculate_weight`` merge."""
    sd = distill_style_lora(components["transformer"], seed=2)
    sd.update(_dora_lora(components["transformer"]))
    path = write(tmp_path, "with_dora", sd)
    base_file, out_file = tmp_path / "base.safetensors", tmp_path / "merged.safetensors"
    save_file({PREFIX + k: v.contiguous() for k, v in lw.wan_dit(components["transformer"]).items()},
              str(base_file))
    subprocess.run([sys.executable, "tests/comfy_lora_oracle.py", str(base_file), str(path),
                    str(strength), str(out_file)], check=True, capture_output=True)
    comfy = {dit.wan_to_diffusers(k.removeprefix(PREFIX)): v for k, v in load_file(str(out_file)).items()}
    lora.activate(loaded, (lora.LoraUse(str(path), strength),), fuse=True)   # peft part merged too
    mine = params(loaded)
    assert set(mine) == set(comfy)
    for name, value in comfy.items():
        torch.testing.assert_close(mine[name], value.reshape(mine[name].shape), atol=1e-5, rtol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")
    lora.activate(loaded, (lora.LoraUse(str(path), strength),))            # unfused: same output
    ref = components["transformer"]
    merged = copy.deepcopy(ref)
    merged.load_state_dict({k: v.reshape(dict(ref.named_parameters())[k].shape) for k, v in comfy.items()})
    torch.testing.assert_close(run(loaded.pipe.transformer), run(merged), **TIGHT)


def test_norm3_modulation_and_head_go_to_their_diffusers_names(loaded, components, tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(9)
    t = components["transformer"]
    deltas = {"blocks.0.norm3.diff": t.blocks[0].norm2.weight,
              "blocks.0.norm3.diff_b": t.blocks[0].norm2.bias,
              "blocks.0.modulation.diff": t.blocks[0].scale_shift_table,
              "blocks.1.diff_m": t.blocks[1].scale_shift_table,   # lightx2v: <block>.diff_m -> modulation
              "head.modulation.diff": t.scale_shift_table, "head.head.diff": t.proj_out.weight,
              "head.head.diff_b": t.proj_out.bias,
              "blocks.1.cross_attn.norm_k_img.diff": t.blocks[1].attn2.norm_added_k.weight,
              "blocks.0.self_attn.norm_q.diff": t.blocks[0].attn1.norm_q.weight,
              "time_projection.1.diff_b": t.condition_embedder.time_proj.bias,
              "patch_embedding.diff": t.patch_embedding.weight}
    sd = {PREFIX + k: torch.randn(p.shape, generator=gen) for k, p in deltas.items()}
    path = write(tmp_path, "norms", sd)
    live = loaded.pipe.transformer
    lora.activate(loaded, (lora.LoraUse(str(path), 0.5),))
    now = params(loaded)
    names = {id(p): n for n, p in t.named_parameters()}
    for key, p in deltas.items():
        torch.testing.assert_close(now[names[id(p)]], p + 0.5 * sd[PREFIX + key], atol=1e-6, rtol=0)
    assert not any(n.startswith("blocks.0.norm3") for n, _ in live.named_parameters())
    reads = FileReads(monkeypatch)
    lora.activate(loaded, (lora.LoraUse(str(path), -1.0),))
    norm3 = sd[PREFIX + "blocks.0.norm3.diff"]
    torch.testing.assert_close(live.blocks[0].norm2.weight, t.blocks[0].norm2.weight - norm3)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.0),))
    assert reads.count == 0, "a strength change re-read the file"
    after = params(loaded)
    for n, p in t.named_parameters():
        assert torch.equal(after[n], p), n   # bit-exact W0


def test_diff_b_is_not_scaled_by_alpha_over_rank(loaded, components, tmp_path):
    t = components["transformer"]
    w = t.blocks[0].attn1.to_q
    gen = torch.Generator().manual_seed(4)
    base = PREFIX + "blocks.0.self_attn.q"
    sd = {f"{base}.lora_down.weight": torch.randn(RANK, w.in_features, generator=gen),
          f"{base}.lora_up.weight": torch.randn(w.out_features, RANK, generator=gen),
          f"{base}.alpha": torch.tensor(1.0), f"{base}.diff_b": torch.randn(w.out_features, generator=gen)}
    path = write(tmp_path, "alpha_bias", sd)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.5),), fuse=True)
    layer = loaded.pipe.transformer.blocks[0].attn1.to_q.base_layer
    torch.testing.assert_close(layer.bias, w.bias + 0.5 * sd[f"{base}.diff_b"], atol=1e-6, rtol=0)
    expected = w.weight + 0.5 * (1.0 / RANK) * sd[f"{base}.lora_up.weight"] @ sd[f"{base}.lora_down.weight"]
    torch.testing.assert_close(layer.weight, expected, atol=1e-5, rtol=1e-5)


def test_replaced_file_is_read_again(loaded, components, tmp_path, monkeypatch):
    t = components["transformer"]
    one, two = distill_style_lora(t, seed=21), distill_style_lora(t, seed=22)
    path = write(tmp_path, "replaced", one)
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    first = run(loaded.pipe.transformer)
    reads = FileReads(monkeypatch)
    tmp = tmp_path / "new.safetensors"
    save_file(two, str(tmp))
    tmp.replace(path)                         # how a download tool replaces a file: same name
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    assert reads.paths == [str(path)]
    files = state_of(loaded).files
    assert list(files.values()) == [str(path)], "the old version is still loaded"
    assert set(loaded.pipe.get_list_adapters()["transformer"]) == set(files)
    out = run(loaded.pipe.transformer)
    assert not torch.allclose(out, first, atol=1e-3)
    torch.testing.assert_close(out, run(merge_by_hand(t, two)), **TIGHT)


def test_truncated_file_names_the_file_and_the_fix(loaded, components, tmp_path):
    path = write(tmp_path, "cut_short", distill_style_lora(components["transformer"], seed=3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WanVolumeError) as err:
        lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    text = str(err.value)
    assert "cut_short.safetensors" in text and "truncated" in text and "download" in text, text
    assert not state_of(loaded).files


def test_peft_dora_is_refused_by_name(loaded, tmp_path):
    sd = {"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(RANK, 256),
          "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(256, RANK),
          "transformer.blocks.0.attn1.to_q.lora_magnitude_vector": torch.rand(256)}
    path = write(tmp_path, "peft_dora", sd)
    with pytest.raises(LoraMismatch, match="peft_dora.safetensors.*DoRA.*Fix"):
        lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))


def test_low_rank_pairs_outside_the_blocks(loaded, components, tmp_path):
    """lora_down/lora_up on head, embeddings (peft adapters) and on the patch conv (a patch)."""
    t = components["transformer"]
    wan = lw.wan_dit(t)
    gen = torch.Generator().manual_seed(8)
    sd = {}
    for module in ("head.head", "time_embedding.0", "text_embedding.2", "img_emb.proj.1", "patch_embedding"):
        w = wan[f"{module}.weight"]
        sd[f"{PREFIX}{module}.lora_down.weight"] = torch.randn(RANK, *w.shape[1:], generator=gen) * 0.1
        sd[f"{PREFIX}{module}.lora_up.weight"] = torch.randn(w.shape[0], RANK, *[1] * (w.dim() - 2),
                                                             generator=gen) * 0.1
        sd[f"{PREFIX}{module}.alpha"] = torch.tensor(ALPHA)
    path = write(tmp_path, "outside", sd)
    lora.activate(loaded, (lora.LoraUse(str(path), 0.9),))
    report = lora.report_for(loaded, path)
    assert (report.status, report.matched, report.patched) == ("full", 5, 1)
    torch.testing.assert_close(run(loaded.pipe.transformer), run(merge_by_hand(t, sd, 0.9)), **TIGHT)


def test_tiny_distill_lora_applies_in_full(components, tmp_path):
    """The test volume's distill-style LoRA (used by the fast workflows): every key applied,
    its norm ``.diff`` keys as full-delta patches, nothing skipped or unmatched."""
    from safetensors.torch import load_file

    from wan_engine import tiny_model
    from wan_engine.lora.formats import split_lora

    path = tiny_model.ensure_demo_distill_lora(tmp_path)
    sd = load_file(str(path))
    parsed = split_lora(sd, components["transformer"], str(path))
    report = parsed.report
    assert any(k.endswith(".diff") for k in sd) and any(k.endswith(".diff_b") for k in sd)
    assert report.status == "full", report.summary()
    assert report.unmatched == 0 and report.skipped == [] and report.patched > 0


def test_a_lora_of_nans_is_refused_naming_the_file_and_tensor(loaded, components, tmp_path):
    """Issue 24: a LoRA full of NaNs was applied silently (every frame NaN)."""
    sd = distill_style_lora(components["transformer"], seed=4)
    key = sorted(sd)[0]
    sd[key] = torch.full_like(sd[key], float("nan"))
    path = write(tmp_path, "nans", sd)
    before = run(loaded.pipe.transformer)
    with pytest.raises(WanVolumeError) as err:
        lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    text = str(err.value)
    assert "nans.safetensors" in text and key in text and "NaN" in text and "download" in text, text
    assert not state_of(loaded).files
    torch.testing.assert_close(run(loaded.pipe.transformer), before, rtol=0, atol=0)
