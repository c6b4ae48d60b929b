"""One scan of the volume per change: repeated look-ups reuse the index, changes are noticed."""
from __future__ import annotations

import os
import shutil

import pytest

from wan_engine.store import stfile, find as volume
from wan_engine import tiny_model
from spies import IndexUse


@pytest.fixture
def counted(tiny_volume, tmp_path, monkeypatch):
    """A private copy of the tiny volume, and a count of safetensors headers opened."""
    vol = tmp_path / "models"
    shutil.copytree(tiny_volume, vol)
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(vol))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    reads = []
    real = stfile.read_header

    def counting(path):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(stfile, "read_header", counting)
    volume.clear_index()
    return vol, reads, IndexUse(monkeypatch)


def lookups() -> None:
    """What one prompt does: dropdowns, validation, execution (sets and LoRAs each)."""
    for _ in range(3):
        volume.complete_set_names()
        volume.get_model_set(tiny_model.TINY_SET_NAME)
        volume.find_loras()
        volume.get_lora("loras/tiny_kissing_style_lora.safetensors")


def test_unchanged_volume_is_scanned_once(counted):
    vol, reads, index = counted
    repo = vol / "some-lora-repo"            # a LoRA repo folder: its header is read to know it
    repo.mkdir()
    shutil.copy(vol / "loras" / "tiny_kissing_style_lora.safetensors", repo / "style.safetensors")
    before = {"scans": index.scans, "reused": index.reused}
    lookups()
    scans = index.scans - before["scans"]
    assert scans == 2, "one scan for the sets, one for the LoRAs"
    first_reads = len(reads)
    assert first_reads >= 1
    lookups()
    lookups()
    assert index.scans - before["scans"] == scans and len(reads) == first_reads
    assert index.reused - before["reused"] >= 30


@pytest.mark.parametrize("change", ["add", "replace", "remove"])
def test_changed_file_is_noticed(counted, change):
    vol, reads, index = counted
    lora = vol / "loras" / "tiny_kissing_style_lora.safetensors"
    names = lambda: [lf.name for lf in volume.find_loras() if "distill" not in lf.name]   # noqa: E731
    assert names() == ["loras/tiny_kissing_style_lora.safetensors"]
    scans = index.scans
    assert names() and index.scans == scans          # unchanged: no rescan
    if change == "add":
        shutil.copy(lora, vol / "loras" / "second.safetensors")
        assert "loras/second.safetensors" in names()
    elif change == "replace":                  # same name and size, new file (as a download does)
        tmp = vol / "loras" / "new.tmp"
        shutil.copy(lora, tmp)
        st = lora.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))   # even with the same mtime
        os.replace(tmp, lora)
        assert names() == ["loras/tiny_kissing_style_lora.safetensors"]
    else:
        lora.unlink()
        assert names() == []
    assert index.scans > scans


def test_new_model_set_appears_and_removed_one_goes(counted):
    vol, _, _ = counted
    assert volume.complete_set_names() == [tiny_model.TINY_SET_NAME]
    copy = vol / "Wan2.1-I2V-tiny-copy-Diffusers"
    shutil.copytree(vol / tiny_model.TINY_SET_NAME, copy)
    assert sorted(volume.complete_set_names()) == sorted([tiny_model.TINY_SET_NAME, copy.name])
    (copy / "vae" / "config.json").unlink()      # a component going incomplete is noticed too
    (copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert volume.complete_set_names() == [tiny_model.TINY_SET_NAME]
