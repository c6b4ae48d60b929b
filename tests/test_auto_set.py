"""``model_set = "auto: ..."``: the best complete set of a family and resolution (store/auto_set.py),
what ``check`` says about the shipped workflows (store/workflows.py), and the shipped workflows'
LoRA names where the profiles put them."""
from __future__ import annotations

import json
import logging

import pytest

import layout_writers as lw
from helpers import REPO
from wan_engine.errors import ModelSetNotFound
from wan_engine.store import auto_set, check as chk, profiles, workflows as wf
from wan_engine.store import find as volume
from wan_engine.tiny_model import build_components

AUTO_720, AUTO_480, AUTO_22 = auto_set.VALUES
API = sorted((REPO / "workflows" / "api").glob("*.json"))


@pytest.fixture(scope="module")
def comps():
    return lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))


@pytest.fixture
def vol(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(models))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf-cache"))
    volume.clear_index()
    yield models
    volume.clear_index()


def put_lora(models, name: str) -> None:
    """A LoRA-shaped file at ``name`` below the models dir (where its profile puts it)."""
    from safetensors.torch import save_file
    import torch
    path = models / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 4)}, str(path))


def test_the_rule_prefers_16_bit_then_fp8_and_names_the_set(comps, vol, caplog):
    lw.write_comfy(vol, comps, ("fp8_e4m3fn", "bf16"))
    caplog.set_level(logging.INFO, logger="wan_engine.store.auto_set")
    found = volume.get_model_set(AUTO_720)
    assert found.name == "comfy/wan2.1_i2v_720p_tiny_bf16"
    assert f"model_set {AUTO_720} -> comfy/wan2.1_i2v_720p_tiny_bf16 (rule: " in caplog.text
    (vol / "diffusion_models" / "wan2.1_i2v_720p_tiny_bf16.safetensors").unlink()
    assert volume.get_model_set(AUTO_720).name == "comfy/wan2.1_i2v_720p_tiny_fp8_e4m3fn"


def test_a_diffusers_set_wins_and_explicit_names_are_kept(comps, vol):
    lw.write_comfy(vol, comps, ("bf16",))
    lw.write_diffusers(vol / "Wan2.1-I2V-14B-720P-Diffusers", comps)
    assert volume.get_model_set(AUTO_720).name == "Wan2.1-I2V-14B-720P-Diffusers"
    assert volume.get_model_set("comfy/wan2.1_i2v_720p_tiny_bf16").name == "comfy/wan2.1_i2v_720p_tiny_bf16"


def test_a_damaged_or_unfinished_set_is_passed_over(comps, vol):
    lw.write_comfy(vol, comps, ("bf16", "fp8_e4m3fn"))
    best = vol / "diffusion_models" / "wan2.1_i2v_720p_tiny_bf16.safetensors"
    best.write_bytes(best.read_bytes()[:-100])             # truncated: the header no longer fits
    assert volume.get_model_set(AUTO_720).name == "comfy/wan2.1_i2v_720p_tiny_fp8_e4m3fn"


def test_nothing_fits_names_field_value_holdings_and_the_command(comps, vol):
    lw.write_comfy(vol, comps, ("bf16",))
    with pytest.raises(ModelSetNotFound) as exc:
        volume.get_model_set(AUTO_480)
    text = str(exc.value)
    assert text.startswith(f"model_set = '{AUTO_480}': no complete Wan2.1 I2V 480P set on the volume")
    assert "comfy/wan2.1_i2v_720p_tiny_bf16" in text
    assert f"python wanvolume.py preload --profile comfy-480p-bf16 --models-dir {vol}" in text
    with pytest.raises(ModelSetNotFound, match="preload --profile wan22-comfy-fp16"):
        volume.get_model_set(AUTO_22)


def test_the_status_document_names_each_auto_choice(comps, vol):
    from wan_engine.store.status import volume_status
    lw.write_comfy(vol, comps, ("bf16",))
    auto = {a["value"]: a for a in volume_status(vol)["auto"]}
    assert list(auto) == list(auto_set.VALUES)
    assert auto[AUTO_720] == {"value": AUTO_720, "set": "comfy/wan2.1_i2v_720p_tiny_bf16", "command": ""}
    assert auto[AUTO_480]["set"] is None
    assert auto[AUTO_480]["command"] == profiles.preload_command("comfy-480p-bf16", vol)


def test_the_shipped_workflows_carry_auto_values_and_loras_the_profiles_fetch():
    for path in API:
        nodes = json.loads(path.read_text()).values()
        (loader,) = [n["inputs"] for n in nodes if n["class_type"] == "WanVolumeModelLoader"]
        assert loader["model_set"] in auto_set.VALUES, path.name
        for lora in (n["inputs"]["lora"] for n in nodes if n["class_type"] == "WanVolumeLoraApply"):
            profile = profiles.profile_for_file(lora, kind="lora")
            assert profile is not None, (path.name, lora)


def test_the_recommended_profiles_serve_the_recommended_workflows():
    """What a preload of profiles.RECOMMENDED writes is what the 720p workflows ask for."""
    wanted = set(profiles.RECOMMENDED)
    for name in wf.RECOMMENDED:
        api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
        for n in api.values():
            if n["class_type"] == "WanVolumeLoraApply":
                assert profiles.profile_for_file(n["inputs"]["lora"], "lora").name in wanted
            if n["class_type"] == "WanVolumeModelLoader":
                assert auto_set.choice_of(n["inputs"]["model_set"]).profiles[0] in wanted


def test_check_lists_the_workflows_the_volume_can_run(comps, vol):
    lw.write_comfy(vol, comps, ("bf16",))
    put_lora(vol, "kissing-lora/kissing_30_epochs.safetensors")
    report = chk.check(vol)
    by_name = {c.name: c for c in report.workflows}
    assert by_name["kiss_i2v_720p"].ready and by_name["kiss_i2v_720p"].resolved == "comfy/wan2.1_i2v_720p_tiny_bf16"
    fast = by_name["kiss_i2v_720p_fast"]
    assert not fast.ready and fast.commands == [profiles.preload_command("distill-lora-720p", vol)]
    assert not by_name["kiss_i2v_480p"].ready
    assert by_name["kiss_i2v_480p"].commands == [profiles.preload_command("comfy-480p-bf16", vol)]
    text = report.message()
    assert f"  kiss_i2v_720p: ready ({AUTO_720} -> comfy/wan2.1_i2v_720p_tiny_bf16)" in text
    assert ("  kiss_i2v_720p_fast: missing LoRA distill-lora-720p/"
            "Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors; fetch with: "
            f"python wanvolume.py preload --profile distill-lora-720p --models-dir {vol}") in text
    put_lora(vol, profiles.distill_lora_name("720p"))
    assert all(c.ready for c in chk.check(vol).workflows if c.name in wf.RECOMMENDED)
