"""Every fix the pack shows fetches the very file that is missing (engine side; the browser side is
tests/test_browser_fetch_hints.py): profiles are matched by the files they provide."""
from __future__ import annotations

import json

import pytest

from helpers import API_WORKFLOWS, WAN22_API_WORKFLOWS
from wan_engine.errors import ModelSetNotFound
from wan_engine.store import auto_set, damage, profiles
from wan_engine.store import find as volume
from wan_engine.store.status import volume_status


def wanted_files(path) -> list[tuple[str, str]]:
    """(kind, name relative to <models>) of each file a shipped API workflow asks for."""
    out = []
    for node in json.loads(path.read_text()).values():
        if node["class_type"] == "WanVolumeModelLoader":     # an auto value: its recommended profile's DiT
            choice = auto_set.choice_of(node["inputs"]["model_set"])
            out.append(("model_set", profiles.PROFILES[choice.profiles[0]].provides()[0]))
        elif node["class_type"] == "WanVolumeLoraApply":
            out.append(("lora", node["inputs"]["lora"]))
    return out


@pytest.mark.parametrize("workflow", API_WORKFLOWS + WAN22_API_WORKFLOWS, ids=lambda p: p.stem)
def test_each_file_of_each_shipped_workflow_has_the_profile_that_fetches_it(workflow):
    files = wanted_files(workflow)
    assert len(files) >= 2
    for kind, name in files:
        profile = profiles.profile_for_file(name, kind)
        assert profile is not None, name
        assert profile.fetches(name)
        others = [p.name for p in profiles.PROFILES.values() if p.kind == kind and p is not profile]
        assert not any(profiles.PROFILES[o].fetches(name) for o in others), (name, others)


def test_the_kissing_lora_is_not_offered_the_distill_profile():
    kiss = "kissing-lora/kissing_30_epochs.safetensors"
    assert profiles.profile_for_file(kiss).name == "kissing-lora"
    assert profiles.fetch_hint(kiss, "/v") == "python wanvolume.py preload --profile kissing-lora --models-dir /v"
    fast = profiles.distill_lora_name("720p")
    assert profiles.profile_for_file(fast).name == "distill-lora-720p"


def test_a_file_no_profile_provides_names_its_folder():
    assert profiles.profile_for_file("loras/mine/style.safetensors") is None
    assert profiles.fetch_hint("loras/mine/style.safetensors", "/v") == \
        "put style.safetensors in /v/loras/mine/ (no profile fetches it)"
    assert damage.lora_fix("loras/mine/style.safetensors") == damage.LORA_FIX
    assert "--profile distill-lora-480p`" in damage.lora_fix(profiles.distill_lora_name("480p"))


def test_missing_lora_error_fetches_that_lora(volume_env):
    with pytest.raises(ModelSetNotFound) as err:
        volume.get_lora(profiles.distill_lora_name("480p"))
    msg = str(err.value)
    assert f"Fix: `python wanvolume.py preload --profile distill-lora-480p --models-dir {volume_env}`" in msg
    with pytest.raises(ModelSetNotFound) as err:
        volume.get_lora("loras/none.safetensors")
    assert str(err.value).endswith(f"put none.safetensors in {volume_env}/loras/ (no profile fetches it)")


def test_status_document_lists_what_each_profile_provides(volume_env):
    doc = volume_status(volume_env)
    provides = {p["name"]: p["provides"] for p in doc["profiles"]}
    assert provides["kissing-lora"] == ["kissing-lora/*.safetensors"]
    assert provides["distill-lora-480p"] == [profiles.distill_lora_name("480p")]
