"""Every common Wan LoRA format loads and changes the output exactly as W + strength * B @ A."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wan_engine.lora import apply as lora
from wan_engine.lora.state import state_of
from wan_engine.load.assemble import LoadedPipeline
from wan_engine.errors import LoraMismatch
from wan_engine.load.keymaps import dit
from wan_engine.tiny_model import TRANSFORMER_CONFIG, build_components
from lora_builders import FileReads
from wan_engine.store.find import ModelSet

RANK = 4
DIM = TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"]
FFN = TRANSFORMER_CONFIG["ffn_dim"]
SHAPES = {f"{a}.{p}": (DIM, DIM) for a in ("self_attn", "cross_attn") for p in "qkvo"}
SHAPES.update({"cross_attn.k_img": (DIM, DIM), "cross_attn.v_img": (DIM, DIM),
               "ffn.0": (FFN, DIM), "ffn.2": (DIM, FFN)})


def canonical(seed: int, with_bias: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Wan module name -> {"A", "B"(, "b")}: the effective delta is B @ A (+ b)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n in range(TRANSFORMER_CONFIG["num_layers"]):
        for name, (o, i) in SHAPES.items():
            mod = {"A": torch.randn(RANK, i, generator=gen) * 0.3,
                   "B": torch.randn(o, RANK, generator=gen) * 0.3}
            if with_bias:
                mod["b"] = torch.randn(o, generator=gen) * 0.1
            out[f"blocks.{n}.{name}"] = mod
    return out


def as_format(canon: dict, fmt: str, alpha: float = RANK / 2) -> dict[str, torch.Tensor]:
    """Write the canonical LoRA in one file format."""
    sd = {}
    for wan_name, m in canon.items():
        if fmt == "wan_AB":
            base = f"diffusion_model.{wan_name}"
            sd[f"{base}.lora_A.weight"], sd[f"{base}.lora_B.weight"] = m["A"], m["B"]
        elif fmt in ("wan_updown_alpha", "musubi"):
            base = (f"diffusion_model.{wan_name}" if fmt == "wan_updown_alpha"
                    else "lora_unet_" + wan_name.replace(".", "_"))
            sd[f"{base}.lora_down.weight"] = m["A"] * (RANK / alpha)   # file stores A*rank/alpha
            sd[f"{base}.lora_up.weight"] = m["B"]
            sd[f"{base}.alpha"] = torch.tensor(alpha)
            if "b" in m:
                sd[f"{base}.diff_b"] = m["b"]
        elif fmt == "bare":
            sd[f"{wan_name}.lora_A.weight"], sd[f"{wan_name}.lora_B.weight"] = m["A"], m["B"]
        elif fmt == "diffusers":
            base = "transformer." + dit.wan_to_diffusers(wan_name)
            sd[f"{base}.lora_A.weight"], sd[f"{base}.lora_B.weight"] = m["A"], m["B"]
    return sd


def write(tmp: Path, name: str, sd: dict) -> Path:
    path = tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def components():
    return build_components(seed=0)


@pytest.fixture()
def loaded(components):
    from diffusers import WanImageToVideoPipeline

    comps = dict(components, transformer=copy.deepcopy(components["transformer"]))
    pipe = WanImageToVideoPipeline(**comps)
    ms = ModelSet(name="tiny", layout="diffusers", root=Path("."))
    return LoadedPipeline(key=("t",), model_set=ms, pipe=pipe, dtype=torch.float32,
                          device=torch.device("cpu"), offload="none", load_seconds=0.0)


def inputs():
    gen = torch.Generator().manual_seed(3)
    return dict(hidden_states=torch.randn(1, 36, 1, 4, 4, generator=gen),
                timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 512, 4096, generator=gen),
                encoder_hidden_states_image=torch.randn(1, 5, 1280, generator=gen),
                return_dict=False)


def run(transformer) -> torch.Tensor:
    with torch.no_grad():
        return transformer(**inputs())[0]


def merged_reference(base, loras: list[tuple[dict, float]]) -> torch.Tensor:
    """Output of a copy of ``base`` with W += s * B @ A (and b += s * diff_b) applied by hand."""
    ref = copy.deepcopy(base)
    mods = dict(ref.named_modules())
    with torch.no_grad():
        for canon, strength in loras:
            for wan_name, m in canon.items():
                layer = mods[dit.wan_to_diffusers(wan_name)]
                layer.weight += strength * (m["B"] @ m["A"])
                if "b" in m:
                    layer.bias += strength * m["b"]
    return run(ref)


@pytest.mark.parametrize("fmt", ["wan_AB", "wan_updown_alpha", "musubi", "bare", "diffusers"])
def test_format_applies_exact_delta(loaded, components, tmp_path, fmt):
    canon = canonical(seed=11, with_bias=fmt in ("wan_updown_alpha", "musubi"))
    path = write(tmp_path, fmt, as_format(canon, fmt))
    base_out = run(loaded.pipe.transformer)
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    report = lora.report_for(loaded, path)
    assert report.status == "full" and report.matched == len(canon) and report.unmatched == 0
    out = run(loaded.pipe.transformer)
    expected = merged_reference(components["transformer"], [(canon, 1.0)])
    assert not torch.allclose(out, base_out, atol=1e-3), "the LoRA changed nothing"
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=1e-4)


def test_musubi_with_only_some_layers(loaded, components, tmp_path):
    canon = {k: v for k, v in canonical(seed=12).items()
             if k.startswith("blocks.0.self_attn.") or k == "blocks.1.ffn.2"}
    path = write(tmp_path, "musubi_partial", as_format(canon, "musubi"))
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    assert lora.report_for(loaded, path).matched == 5
    expected = merged_reference(components["transformer"], [(canon, 1.0)])
    torch.testing.assert_close(run(loaded.pipe.transformer), expected, atol=2e-4, rtol=1e-4)


def test_t2v_lora_into_i2v(loaded, components, tmp_path):
    canon = {k: v for k, v in canonical(seed=13).items() if "_img" not in k}
    path = write(tmp_path, "t2v", as_format(canon, "wan_AB"))
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    assert lora.report_for(loaded, path).status == "full"
    expected = merged_reference(components["transformer"], [(canon, 1.0)])
    torch.testing.assert_close(run(loaded.pipe.transformer), expected, atol=2e-4, rtol=1e-4)


def test_partial_match_reports_counts(loaded, tmp_path):
    canon = canonical(seed=14)
    sd = as_format(canon, "wan_AB")
    for layer in ("blocks.7.self_attn.q", "blocks.8.ffn.0"):   # the tiny model has 2 blocks
        sd[f"diffusion_model.{layer}.lora_A.weight"] = torch.randn(RANK, DIM)
        sd[f"diffusion_model.{layer}.lora_B.weight"] = torch.randn(DIM, RANK)
    path = write(tmp_path, "partial", sd)
    lora.activate(loaded, (lora.LoraUse(str(path), 1.0),))
    report = lora.report_for(loaded, path)
    assert (report.status, report.matched, report.unmatched) == ("partial", len(canon), 2)
    assert "blocks.7.self_attn.q" in report.summary()


@pytest.mark.parametrize("kind,expected", [("wan13b", "1.3B"), ("sdxl", "SDXL"), ("flux", "Flux")])
def test_zero_match_is_an_error_naming_the_origin(loaded, tmp_path, kind, expected):
    if kind == "wan13b":   # right names, hidden size 1536: a Wan 1.3B LoRA
        sd = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(RANK, 1536),
              "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(1536, RANK)}
    elif kind == "sdxl":
        sd = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(RANK, 320),
              "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(320, RANK),
              "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(4.0)}
    else:
        sd = {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(RANK, 64),
              "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(64, RANK)}
    path = write(tmp_path, f"not_wan_{kind}", sd)
    with pytest.raises(LoraMismatch) as err:
        lora.ensure_adapter(loaded, path)
    assert path.name in str(err.value) and expected in str(err.value)
    assert not state_of(loaded).files


def test_stacking_strengths_and_fuse(loaded, components, tmp_path, monkeypatch):
    c1, c2 = canonical(seed=21), canonical(seed=22)
    p1 = write(tmp_path, "one", as_format(c1, "wan_AB"))
    p2 = write(tmp_path, "two", as_format(c2, "musubi"))
    base = run(loaded.pipe.transformer)
    uses = (lora.LoraUse(str(p1), 0.5), lora.LoraUse(str(p2), 1.0))
    lora.activate(loaded, uses)
    stacked = run(loaded.pipe.transformer)
    ref = components["transformer"]
    torch.testing.assert_close(stacked, merged_reference(ref, [(c1, 0.5), (c2, 1.0)]),
                               atol=3e-4, rtol=1e-4)
    reads = FileReads(monkeypatch)
    lora.activate(loaded, (lora.LoraUse(str(p1), -0.7), lora.LoraUse(str(p2), 0.25)))
    torch.testing.assert_close(run(loaded.pipe.transformer),
                               merged_reference(ref, [(c1, -0.7), (c2, 0.25)]), atol=3e-4, rtol=1e-4)
    lora.activate(loaded, uses, fuse=True)
    fused = run(loaded.pipe.transformer)
    assert reads.count == 0, "a strength change or fuse re-read a LoRA file"
    torch.testing.assert_close(fused, stacked, atol=1e-4, rtol=1e-5)
    lora.activate(loaded, (lora.LoraUse(str(p1), 0.0), lora.LoraUse(str(p2), 0.0)))
    torch.testing.assert_close(run(loaded.pipe.transformer), base, atol=1e-6, rtol=0)
