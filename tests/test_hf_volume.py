"""A volume filled with hf download (original Wan layout, .pth files, no preload manifest).

The .pth files are verified against hf download's own records (the Hub's SHA-256), hashed
once and remembered; changed files are refused; adopt/status/check/verify see the set as it is.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hf_local_fixtures as hf
import layout_writers as lw
from volume_fixtures import cli
from wan_engine.store import adopt, check as chk, hf_local, manifest as mf, find as volume
from wan_engine.load.layouts import build, pth
from wan_engine.store.scan import wan_original
from wan_engine.store.status import volume_status
from wan_engine.tiny_model import build_components, ensure_demo_lora
from spies import Calls

WAN = "Wan2.1-I2V-14B-720P"          # the setup guide's --local-dir name: profile wan21-i2v-720p
LORA = "kissing-lora"
VAE = wan_original.FILES["vae"]
T5 = wan_original.FILES["text_encoder"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hfvol")
    hf.write_hf_wan(d / WAN, lw.representable(build_components(seed=0)))
    lora = ensure_demo_lora(tmp_path_factory.mktemp("lora"))
    hf.write_hf_lora(d / LORA, lora)
    return d


@pytest.fixture
def models(template, tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    shutil.copytree(template, d)              # copy2: mtimes kept, records stay current
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(d))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    monkeypatch.delenv(build.ENV_TRUST_PTH, raising=False)
    pth._verified.clear()
    return d


def test_records_are_huggingface_hubs_own(models):
    from huggingface_hub._local_folder import read_download_metadata
    ours = hf_local.find_record(models / WAN / VAE)
    theirs = read_download_metadata(models / WAN, VAE)
    assert theirs is not None, "huggingface_hub itself must accept the record as current"
    assert (ours.commit, ours.etag, ours.timestamp) == (theirs.commit_hash, theirs.etag, theirs.timestamp)
    assert ours.kind == "sha256" and hf_local.find_record(models / WAN / "config.json").kind == "git-sha1"


def test_pth_with_hub_record_loads_without_trust_and_is_hashed_once(models, monkeypatch):
    path = models / WAN / VAE
    hashed = Calls(monkeypatch, pth, "_hash_with_progress")
    assert "encoder.conv1.weight" in pth.load_pth(path)
    assert hashed.count == 1
    entry = mf.locate(path).entry
    assert entry.origin == mf.ORIGIN_HF_LOCAL and entry.revision == hf.COMMIT
    assert entry.sha256 == hf_local.find_record(path).etag and entry.vouches_for(path)
    assert mf.locate(path).name == "wan21-i2v-720p"
    pth._verified.clear()                     # a new process: only the manifest remembers
    pth.load_pth(path)
    assert hashed.count == 1, "the second start must not hash the file again"


@pytest.mark.parametrize("damage", ["flip", "truncate", "replace"])
def test_changed_pth_is_refused_naming_file_and_hashes(models, damage):
    path = models / WAN / T5
    record = hf_local.find_record(path)
    size = path.stat().st_size
    if damage == "flip":
        hf.flip_byte(path, size // 2)
    elif damage == "truncate":
        hf.truncate(path, size - 100)
    else:
        torch.save({"x": torch.zeros(3)}, path)
    hf.age(path, -60)          # written a minute after the record (no timing race in the test)
    with pytest.raises(pth.PthRefused) as err:
        pth.load_pth(path)
    msg = str(err.value)
    assert str(path) in msg and f"recorded {record.etag}" in msg and "modified after" in msg
    assert f"({path.stat().st_size} bytes)" in msg
    assert mf.locate(path) is None, "a refused file is not recorded"


def test_changed_after_adoption_is_refused(models):
    path = models / WAN / VAE
    pth.load_pth(path)                        # adopted at load
    pth._verified.clear()
    hf.flip_byte(path, path.stat().st_size // 3)
    with pytest.raises(pth.PthRefused, match="the file was changed, truncated or replaced"):
        pth.load_pth(path)


def test_pth_without_any_record_is_refused(models):
    shutil.rmtree(models / WAN / ".cache")
    with pytest.raises(pth.PthRefused, match="no manifest entry and no hf download record"):
        pth.load_pth(models / WAN / VAE)


def test_operator_env_switch_skips_the_check(models, monkeypatch):
    path = models / WAN / VAE
    hf.flip_byte(path, 10_000)
    monkeypatch.setenv(build.ENV_TRUST_PTH, "1")
    hashed = Calls(monkeypatch, pth, "_hash_with_progress")
    pth.check_pth(path)
    assert hashed.count == 0


def test_status_check_verify_before_and_after_adopt(models):
    (s,) = [s for s in volume_status(models)["model_sets"] if s["name"] == WAN]
    assert s["complete"] and s["integrity"] == "hub-metadata" and s["bad_files"] == {}
    report = chk.check(models)
    assert report.ok, report.message()
    assert "hf download" in report.message() and f"adopt {WAN}" in report.message()
    res = cli("adopt", "--models-dir", str(models))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "as manifest wan21-i2v-720p" in res.stdout and "as manifest kissing-lora" in res.stdout
    (s,) = [s for s in volume_status(models)["model_sets"] if s["name"] == WAN]
    assert s["integrity"] == "verified" and s["verified"] is True
    doc = volume_status(models)
    assert {p["name"]: p["ready"] for p in doc["profiles"]}["kissing-lora"] is True
    assert {p["name"]: p["ready"] for p in doc["profiles"]}["wan21-i2v-720p"] is True
    assert chk.check(models).ok
    again = cli("adopt", WAN, "--models-dir", str(models))
    assert "adopted 0 file(s)" in again.stdout and again.returncode == 0
    ok = cli("verify", "--models-dir", str(models))
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr


def test_bad_files_show_in_status_check_verify_and_adopt(models):
    shard = models / WAN / "diffusion_pytorch_model-00001-of-00003.safetensors"
    hf.flip_byte(shard, shard.stat().st_size - 5)       # data byte: the header still reads
    hf.age(shard, -60)                                   # written a minute after the record
    config = models / WAN / "config.json"
    config.write_text(config.read_text().replace('"eps": 1e-06', '"eps": 1e-05'))
    hf.age(config)                                       # and no mtime hint: only the hash tells
    (s,) = [s for s in volume_status(models)["model_sets"] if s["name"] == WAN]
    assert s["integrity"] == "bad" and str(shard) in s["bad_files"]
    res = cli("adopt", str(models / WAN), "--models-dir", str(models))
    assert res.returncode == 1
    assert f"MISMATCH {shard}" in res.stdout and f"MISMATCH {config}" in res.stdout
    assert "git blob SHA-1" in res.stdout
    ver = cli("verify", "--models-dir", str(models))
    assert ver.returncode == 1 and f"MISMATCH {shard}" in ver.stdout


def test_kissing_lora_folder_found_as_is(models):
    names = [lf.name for lf in volume.find_loras()]
    assert names == [f"{LORA}/kissing_30_epochs.safetensors"]
    assert not any(".cache" in n for n in names)
    assert WAN not in [lf.name.split("/")[0] for lf in volume.find_loras()]


def test_adopt_refuses_a_folder_without_records(models):
    res = cli("adopt", "nope", "--models-dir", str(models))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "not a folder written by `hf download --local-dir`" in res.stderr


def test_adopt_reports_unfinished_download(models):
    part = models / WAN / hf_local.DOWNLOAD_DIR / "abc.123.incomplete"
    part.write_bytes(b"x")
    report = adopt.adopt(models / WAN)
    assert not report.ok and report.unfinished == ["abc.123.incomplete"]
    assert json.loads(mf.manifest_path(models, "wan21-i2v-720p").read_text())["entries"]
