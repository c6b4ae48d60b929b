"""Wan2.2 two-expert sets found by content in every layout; roles by name; gaps named with fixes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wan22_fixtures import LAYOUT_DIRS, wan22_volumes, wan22_components  # noqa: F401 (fixtures)
import wan22_writers as w
from wan_engine.store import find, identify, profiles
from wan_engine.store.scan import SCANS, wan22

EXPECTED = {"diffusers": ("diffusers", "Wan2.2-I2V-tiny-Diffusers"),
            "original": ("wan22", "Wan2.2-I2V-A14B-tiny"),
            "comfy": ("wan22-comfy", "comfy/wan2.2_i2v_{high,low}_noise_14B_fp16"),
            "split": ("wan22-comfy", "comfy/wan2.2_i2v_{high,low}_noise_14B_fp16"),
            "kijai": ("wan22-comfy", "comfy/Wan2_2-I2V-A14B-{high,low}_bf16"),
            "gguf": ("wan22-comfy", "comfy/Wan2.2-I2V-A14B-{high,low}Noise-Q8_0")}


def sets_in(models_dir: Path):
    return [s for scan in SCANS for s in scan.scan(models_dir)]


@pytest.mark.parametrize("layout", LAYOUT_DIRS)
def test_every_layout_is_one_complete_wan22_set(wan22_volumes, layout):
    (found,) = sets_in(wan22_volumes / layout)
    assert (found.layout, found.name) == EXPECTED[layout]
    assert found.complete and found.two_experts and found.family == "Wan2.2", found.missing
    assert "image_encoder" not in found.components          # no CLIP branch, no CLIP file needed
    high, low = Path(found.components["transformer"]), Path(found.components["transformer_2"])
    assert high != low
    if layout not in ("diffusers", "original"):           # the file names say the roles
        assert (wan22.role_of(high.name), wan22.role_of(low.name)) == ("high", "low")
    sizes = found.expert_bytes()
    assert set(sizes) == {"transformer", "transformer_2"} and all(v > 0 for v in sizes.values())


def test_the_experts_are_told_apart_by_header_not_as_wan21(wan22_volumes):
    f = wan22_volumes / "comfy" / "diffusion_models" / "wan2.2_i2v_high_noise_14B_fp16.safetensors"
    what = identify.identify_file(f)
    assert what.kind == "dit" and not what.i2v and what.fit["in_dim"] == 36 and wan22.is_expert(what)


@pytest.mark.parametrize("name,role", [
    ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "high"),
    ("Wan2_2-I2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors", "low"),
    ("LowNoise/Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf", "low"),
    ("my_wan22_expert.safetensors", None), ("slow_flow_highres.safetensors", None),
    ("high/wan2.2_i2v_low_noise.safetensors", None)])
def test_role_from_names(name, role):
    assert wan22.role_of(name) == role


def test_one_expert_missing_names_it_and_the_fetch(wan22_volumes, tmp_path):
    vol = tmp_path / "models"
    shutil.copytree(wan22_volumes / "comfy", vol)
    (vol / "diffusion_models" / "wan2.2_i2v_low_noise_14B_fp16.safetensors").unlink()
    (found,) = sets_in(vol)
    assert not found.complete
    (gap,) = found.missing
    assert "wan2.2_i2v_low_noise_14B_fp16.safetensors (the low-noise expert" in gap
    assert "python wanvolume.py preload --profile wan22-comfy-fp16" in gap


def test_original_layout_missing_low_folder(wan22_volumes, tmp_path):
    vol = tmp_path / "models"
    shutil.copytree(wan22_volumes / "original", vol)
    shutil.rmtree(vol / w.ORIGINAL_NAME / "low_noise_model")
    (found,) = sets_in(vol)
    assert any(m.startswith("low_noise_model/ (the low-noise expert") and "wan22-i2v-a14b" in m
               for m in found.missing)


def test_an_expert_whose_name_says_no_role_is_ambiguous(wan22_volumes, tmp_path):
    vol = tmp_path / "models"
    shutil.copytree(wan22_volumes / "kijai", vol)
    d = vol / "diffusion_models"
    (d / "Wan2_2-I2V-A14B-HIGH_bf16.safetensors").rename(d / "wan22_expert_a.safetensors")
    found = {s.name: s for s in sets_in(vol)}
    assert "cannot tell whether wan22_expert_a.safetensors is the high- or the low-noise expert" \
        in found["comfy/wan22_expert_a"].missing[0]
    assert not found["comfy/Wan2_2-I2V-A14B-{high,low}_bf16"].complete     # its high expert is gone


def test_wan21_and_wan22_side_by_side(wan22_volumes, tiny_volume, tmp_path, monkeypatch):
    vol = tmp_path / "models"
    shutil.copytree(tiny_volume, vol)
    shutil.copytree(wan22_volumes / "comfy", vol, dirs_exist_ok=True)
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(vol))
    families = {s.name: s.family for s in find.find_model_sets() if s.complete}
    assert families == {"Wan2.1-I2V-tiny-demo-Diffusers": "Wan2.1",
                        "comfy/wan2.2_i2v_{high,low}_noise_14B_fp16": "Wan2.2"}


def test_profiles_fetch_every_wan22_file():
    p = profiles.get_profile("wan22-comfy-fp8")
    assert p.fetches("diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors")
    assert p.fetches("diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors")
    lightning = profiles.get_profile("wan22-lightning-lora")
    assert lightning.kind == "lora" and all(lightning.fetches(profiles.lightning_lora_name(r)) for r in ("high", "low"))
    assert profiles.profile_for_file(profiles.lightning_lora_name("low"), "lora").name == "wan22-lightning-lora"


def test_status_names_the_missing_expert_and_its_fetch(wan22_volumes, tmp_path):
    from wan_engine.store.status import volume_status

    vol = tmp_path / "models"
    shutil.copytree(wan22_volumes / "comfy", vol)
    (vol / "diffusion_models" / "wan2.2_i2v_high_noise_14B_fp16.safetensors").unlink()
    (entry,) = volume_status(vol)["model_sets"]
    assert entry["layout"] == "wan22-comfy" and not entry["complete"]
    assert entry["missing"] == [
        "diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors (the high-noise expert; fetch: "
        f"python wanvolume.py preload --profile wan22-comfy-fp16 --models-dir {vol})"]
