"""Finding model sets and LoRAs on the volume, and what the errors say."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from wan_engine.store import paths, find as volume
from wan_engine import tiny_model
from wan_engine.errors import ModelSetNotFound


def test_resolution_order(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(a))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(b))
    cands = paths.candidate_models_dirs()
    assert cands[:2] == [a, b] and cands[2:] == list(paths.DEFAULT_DIRS)
    b.mkdir()
    assert paths.primary_models_dir() == b       # first existing wins
    a.mkdir()
    assert paths.primary_models_dir() == a
    monkeypatch.delenv("WAN_VOLUME_MODELS_DIR")
    assert paths.candidate_models_dirs()[0] == b


def test_finds_complete_and_incomplete_sets(volume_env, tmp_path, monkeypatch):
    vol = tmp_path / "models"
    shutil.copytree(volume_env, vol)
    broken = vol / "Wan2.1-I2V-broken-Diffusers"
    shutil.copytree(vol / tiny_model.TINY_SET_NAME, broken)
    shutil.rmtree(broken / "vae")
    (vol / "other-model").mkdir()
    (vol / "other-model" / "model_index.json").write_text(json.dumps({"unet": ["x", "y"]}))
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(vol))
    sets = {s.name: s for s in volume.find_model_sets()}
    assert set(sets) == {tiny_model.TINY_SET_NAME, broken.name}
    assert sets[tiny_model.TINY_SET_NAME].complete and sets[broken.name].missing == ["vae"]
    assert volume.complete_set_names() == [tiny_model.TINY_SET_NAME]
    with pytest.raises(ModelSetNotFound, match="missing: vae"):
        volume.get_model_set(broken.name)


def test_missing_set_error_lists_searched_dirs_and_fix(volume_env):
    with pytest.raises(ModelSetNotFound) as err:
        volume.get_model_set("Wan2.1-I2V-14B-720P-Diffusers")
    msg = str(err.value)
    assert str(volume_env) in msg and "/workspace/models" in msg and "/runpod-volume/models" in msg
    assert "model_index.json" in msg and "wanvolume.py preload" in msg
    assert tiny_model.TINY_SET_NAME in msg


def test_lora_discovery(volume_env, tmp_path, monkeypatch):
    vol = tmp_path / "models"
    shutil.copytree(volume_env, vol)
    repo = vol / "kissing-lora"
    repo.mkdir()
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 4)},
              str(repo / "kissing_30_epochs.safetensors"))
    save_file({"some.weight": torch.zeros(2)}, str(repo / "not_a_lora.safetensors"))
    extra = tmp_path / "comfy_loras"
    extra.mkdir()
    save_file({"x.lora_up.weight": torch.zeros(2, 2)}, str(extra / "mine.safetensors"))
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(vol))
    names = [lf.name for lf in volume.find_loras([extra])]
    assert names == ["loras/tiny_distill_style_lora.safetensors", "loras/tiny_kissing_style_lora.safetensors",
                     "kissing-lora/kissing_30_epochs.safetensors", "loras/mine.safetensors"]
    with pytest.raises(ModelSetNotFound, match="lora = 'nope.safetensors'"):
        volume.get_lora("nope.safetensors")
