"""Damaged files in the status document and the CLI: the same header check the nodes refuse by.

The tiny volume plus a set with a truncated DiT, a set whose DiT is an SDXL UNet, a truncated
LoRA and an SDXL LoRA (tests/damaged_volume.py). Engine level: no ComfyUI.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from damaged_volume import DIT, SDXL_LORA, TRUNCATED_LORA, TRUNCATED_SET, WRONGARCH_SET, damaged_copy
from helpers import TINY_LORA
from volume_fixtures import cli

from wan_engine.store import damage, stfile
from wan_engine.store.modelset import ModelSet
from wan_engine import tiny_model
from wan_engine.store.status import summary_line, volume_status


@pytest.fixture
def vol(tiny_volume_template: Path, tmp_path: Path, monkeypatch) -> Path:
    v = damaged_copy(tiny_volume_template, tmp_path / "models")
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(v))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    return v


def by_name(items: list[dict]) -> dict[str, dict]:
    return {i["name"]: i for i in items}


def test_status_names_each_damaged_set_and_lora_with_file_problem_and_fix(vol):
    doc = volume_status(vol)
    sets, loras = by_name(doc["model_sets"]), by_name(doc["loras"])
    assert sets[tiny_model.TINY_SET_NAME]["damaged"] is None
    cut = sets[TRUNCATED_SET]["damaged"]
    path = vol / TRUNCATED_SET / DIT
    assert cut["file"] == str(path) and cut["problem"] == stfile.truncation_problem(path)
    assert "truncated" in cut["problem"] and cut["fix"] == damage.SET_FIX
    assert cut["message"] == f"the file {path} is damaged: {cut['problem']}"
    wrong = sets[WRONGARCH_SET]["damaged"]
    assert wrong["file"] == str(vol / WRONGARCH_SET / DIT)
    assert wrong["problem"].startswith("not a Wan2.1 DiT: none of its 1 tensors is patch_embedding.weight")
    assert "down_blocks.0.resnets.0.conv1.weight" in wrong["problem"] and "Wan2.1 I2V DiT" in wrong["fix"]
    assert wrong["message"] == f"the file {wrong['file']} is {wrong['problem']}"
    assert loras[TINY_LORA]["damaged"] is None
    assert loras[SDXL_LORA]["damaged"] is None      # a sound header: its keys are checked at load
    bad = loras[TRUNCATED_LORA]["damaged"]
    assert bad["file"] == str(vol / TRUNCATED_LORA) and "truncated" in bad["problem"]
    assert bad["fix"] == damage.lora_fix(TRUNCATED_LORA) == damage.LORA_FIX   # no profile fetches it
    line = summary_line(doc)
    assert "DAMAGED" in line and TRUNCATED_SET in line and WRONGARCH_SET in line and TRUNCATED_LORA in line


def test_sound_volume_has_nothing_damaged(tiny_volume_template, tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(tiny_volume_template))
    doc = volume_status(tiny_volume_template)
    assert [s["damaged"] for s in doc["model_sets"]] == [None]
    assert all(lf["damaged"] is None for lf in doc["loras"]) and "DAMAGED" not in summary_line(doc)


def test_status_reads_headers_once_per_version_of_a_file(vol, monkeypatch):
    volume_status(vol)
    reads: list[str] = []
    real = stfile.read_header
    monkeypatch.setattr(stfile, "read_header", lambda p: reads.append(str(p)) or real(p))
    again = volume_status(vol)
    assert reads == [], reads                          # the index and header facts are reused
    assert by_name(again["model_sets"])[TRUNCATED_SET]["damaged"]
    good = vol / tiny_model.TINY_SET_NAME / DIT
    (vol / TRUNCATED_SET / DIT).write_bytes(good.read_bytes())      # copied again, whole this time
    fixed = volume_status(vol)
    assert by_name(fixed["model_sets"])[TRUNCATED_SET]["damaged"] is None
    assert str(vol / TRUNCATED_SET / DIT) in reads and str(good) not in reads


def test_status_cli_prints_damaged_sets_and_loras(vol):
    res = cli("status", "--models-dir", str(vol))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"DAMAGED model set {TRUNCATED_SET}: the file {vol / TRUNCATED_SET / DIT} is damaged: " in out
    assert f"DAMAGED model set {WRONGARCH_SET}: the file {vol / WRONGARCH_SET / DIT} is not a Wan2.1 DiT" in out
    assert f"DAMAGED LoRA {TRUNCATED_LORA}: the file {vol / TRUNCATED_LORA} is damaged: " in out
    assert f"fix: {damage.SET_FIX}" in out and f"fix: {damage.LORA_FIX}" in out
    assert f"DAMAGED model set {tiny_model.TINY_SET_NAME}" not in out


def test_a_volume_whose_only_sets_are_damaged_is_not_ready(vol):
    assert volume_status(vol)["ready"] is True                 # the tiny set is sound
    shutil.rmtree(vol / tiny_model.TINY_SET_NAME)
    doc = volume_status(vol)
    assert all(s["complete"] and s["damaged"] for s in doc["model_sets"]) and doc["model_sets"]
    assert doc["ready"] is False and "NOT ready" in summary_line(doc)


def test_a_weights_file_replaced_by_a_folder_is_damaged(tmp_path):
    """Issue 24: a text encoder ``.pth`` that became a folder was shown as sound (it "exists")."""
    root = tmp_path / "Wan2.1-I2V-14B-720P"
    folder = root / "models_t5_umt5-xxl-enc-bf16.pth"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "x.bin").write_bytes(b"0" * 16)
    found = ModelSet(name=root.name, layout="wan", root=root, components={"text_encoder": folder})
    bad = damage.set_damage(found)
    assert bad is not None and bad.file == str(folder)
    assert "folder where a weights file should be" in bad.message and bad.fix == damage.SET_FIX
    folder.rename(tmp_path / "moved")
    folder.write_bytes(b"")     # a file again (its content is the hash check's business)
    assert damage.set_damage(found) is None
