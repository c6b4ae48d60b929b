"""Key maps: every key of each original file lands somewhere, nothing is left uninitialised,
and the DiT/VAE maps agree tensor for tensor with diffusers' own converters."""
from __future__ import annotations

import pytest
import torch

import layout_writers as lw
from wan_engine.load.keymaps import clip, dit, t5, vae
from wan_engine.store import identify
from wan_engine.load.layouts.spec import LoadSpec
from wan_engine.load.layouts import build, wan_pth
from wan_engine.tiny_model import TRANSFORMER_CONFIG, VAE_CONFIG, build_components


@pytest.fixture(scope="module")
def comps():
    return build_components(seed=2)


def _assert_same(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k


def test_dit_map_matches_diffusers_converter(comps):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = comps["transformer"].state_dict()
    wan = lw.wan_dit(comps["transformer"])
    assert None not in wan and len(wan) == len(sd)
    theirs = convert_wan_transformer_to_diffusers(dict(wan))
    _assert_same({dit.wan_to_diffusers(k): v for k, v in wan.items()}, theirs)
    _assert_same(theirs, sd)
    prefixed = {f"model.diffusion_model.{k}": v for k, v in wan.items()}
    assert {dit.wan_to_diffusers(k) for k in prefixed} == set(sd)


def test_dit_config_from_shapes(comps):
    wan = lw.wan_dit(comps["transformer"])
    cfg = dit.infer_config({k: tuple(v.shape) for k, v in wan.items()})
    for key in ("in_channels", "out_channels", "text_dim", "freq_dim", "ffn_dim", "num_layers",
                "image_dim", "added_kv_proj_dim", "num_attention_heads", "attention_head_dim"):
        assert cfg[key] == TRANSFORMER_CONFIG[key], key
    assert identify.is_i2v_dit(list(wan)) and not identify.is_i2v_dit(
        [k for k in wan if "img" not in k])


@pytest.mark.parametrize("nrb,mult", [(1, [1, 1, 1, 1]), (2, [1, 2, 4, 4])])
def test_vae_map_for_any_num_res_blocks(nrb, mult):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    cfg = dict(VAE_CONFIG, num_res_blocks=nrb, dim_mult=mult)
    model = AutoencoderKLWan(**cfg)
    wan = lw.wan_vae(model)
    assert None not in wan
    assert vae.infer_config({k: tuple(v.shape) for k, v in wan.items()}) == {
        k: cfg[k] for k in ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample")}
    ours = {vae.wan_to_diffusers(k, nrb): v for k, v in wan.items()}
    _assert_same(ours, model.state_dict())
    if nrb == 2:   # diffusers' converter hard-codes 2 res blocks: agree with it there
        _assert_same(convert_wan_vae_to_diffusers(dict(wan)), model.state_dict())


def test_t5_pth_every_key_lands(comps, tmp_path):
    raw = lw.wan_t5(comps["text_encoder"])
    mapping, unknown = wan_pth.map_t5(raw)
    assert not unknown and len(set(mapping.values())) == len(raw)
    path = tmp_path / "t5.pth"
    torch.save(raw, path)
    model = wan_pth.read_t5(path, torch.float32, LoadSpec(None, trust_pth=True))
    _assert_same(model.state_dict(), comps["text_encoder"].state_dict())
    assert model.config.relative_attention_max_distance == t5.RELATIVE_MAX_DISTANCE
    ids = torch.tensor([[5, 6, 7, 1]])
    comps["text_encoder"].eval()   # built in train mode: dropout
    torch.testing.assert_close(model(ids).last_hidden_state,
                               comps["text_encoder"](ids).last_hidden_state, rtol=0, atol=0)


def test_clip_pth_every_key_lands_or_is_documented(comps):
    raw = lw.wan_clip(comps["image_encoder"])
    sd, unknown = wan_pth.convert_clip(raw)
    assert not unknown
    ignored = {k for k in raw if clip.ignored_reason(k)}
    assert ignored == {k for k in raw if k.startswith(("textual.", "visual.head", "log_scale"))}
    ref = comps["image_encoder"].state_dict()
    _assert_same(sd, ref)      # every model weight is filled, each from the file
    cfg = clip.infer_config({k: tuple(v.shape) for k, v in sd.items()})
    assert cfg["num_attention_heads"] == 16 and cfg["image_size"] == 224 and cfg["patch_size"] == 14


def test_unknown_key_is_an_error_not_silence(comps, tmp_path):
    raw = lw.wan_t5(comps["text_encoder"])
    raw["blocks.0.attn.extra_gate.weight"] = torch.zeros(2)
    path = tmp_path / "t5.pth"
    torch.save(raw, path)
    with pytest.raises(build.IncompatibleWeights, match="extra_gate"):
        wan_pth.read_t5(path, torch.float32, LoadSpec(None, trust_pth=True))


def test_missing_weight_is_reported_as_uninitialised(comps, tmp_path):
    from safetensors.torch import save_file

    from wan_engine.load.layouts import components

    sd = {f"vision_model.{k}": v for k, v in comps["image_encoder"].state_dict().items()
          if k != "post_layernorm.weight"}
    save_file(sd, str(tmp_path / "clip.safetensors"))
    with pytest.raises(build.IncompatibleWeights, match="post_layernorm.weight"):
        components.read_clip_vision(tmp_path / "clip.safetensors")
