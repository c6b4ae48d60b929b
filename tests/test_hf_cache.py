"""The Hugging Face cache layout as a volume, written by huggingface_hub itself from a fake Hub.

Found under $HF_HUB_CACHE-style roots (WAN_VOLUME_HF_CACHE here): the revision refs/main names,
symlinked blobs or plain files; the same frames as the same weights in a plain folder; a changed
blob and a half-downloaded one refused naming the file and the fix; nothing written into the cache.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hf_cache_fixtures as hc
import layout_writers as lw
from fake_hub import FakeHub
from helpers import tiny_request
from volume_fixtures import cli
from wan_engine.errors import ModelSetNotFound
from wan_engine.load import assemble
from wan_engine.lora import apply
from wan_engine.sample import sampling
from wan_engine.store import find as volume, hf_cache, hf_verify
from wan_engine.store.status import volume_status
from wan_engine.tiny_model import build_components, ensure_demo_lora

SET = hc.DIFFUSERS_REPO.split("/")[1]
COMFY_SET = "comfy/wan2.1_i2v_720p_tiny_bf16"
LORA = f"kissing-lora/{hc.LORA_FILE}"


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The same weights in a plain models dir: a diffusers set, ComfyUI files, the kissing LoRA."""
    d = tmp_path_factory.mktemp("plain") / "models"
    comps = lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))
    lw.write_diffusers(d / SET, comps)
    lw.write_comfy(d, comps)
    lora = ensure_demo_lora(tmp_path_factory.mktemp("lora"))
    (d / "kissing-lora").mkdir()
    shutil.copy(lora, d / "kissing-lora" / hc.LORA_FILE)
    return d


@pytest.fixture(scope="module")
def linked(plain, tmp_path_factory) -> Path:
    """A hub cache as huggingface_hub writes it (snapshots link into blobs/)."""
    cache = tmp_path_factory.mktemp("hfcache") / "hub"
    with FakeHub() as hub:
        hub.add_repo(hc.DIFFUSERS_REPO, hc.files_of(plain / SET))
        hub.add_repo(hc.COMFY_REPO, hc.comfy_repo_files(plain))
        hub.add_repo(hc.LORA_REPO, hc.files_of(plain / "kissing-lora"))
        for repo in (hc.DIFFUSERS_REPO, hc.COMFY_REPO, hc.LORA_REPO):
            hc.download(hub, repo, cache)
    return cache


@pytest.fixture(params=["links", "plain-files"])
def cache(request, linked, tmp_path, monkeypatch) -> Path:
    """The cache as written (links) or copied with links resolved, read-only, the only one searched."""
    dest = tmp_path / "hub"
    if request.param == "links":
        shutil.copytree(linked, dest, symlinks=True)
    else:
        hc.resolved_copy(linked, dest)
    hc.read_only(dest)
    monkeypatch.setenv(hf_cache.ENV_CACHES, str(dest))
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(tmp_path / "models"))   # absent: no volume
    monkeypatch.setenv(hf_verify.ENV_STATE_DIR, str(tmp_path / "state"))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    volume.clear_index()
    yield dest
    hc.writable(dest)
    volume.clear_index()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def plain_frames(plain, image) -> dict[str, np.ndarray]:
    """The reference: each set from the plain folder, with the LoRA (computed once)."""
    sets = {s.name: s for s in volume.scan_dir(plain)}
    return {name: frames(sets[name], image, plain / LORA) for name in (SET, COMFY_SET)}


def frames(model_set: volume.ModelSet, image, lora: Path | None = None) -> np.ndarray:
    loaded = assemble.load(model_set, "bf16")
    if lora is not None:
        apply.activate(loaded, (apply.LoraUse(str(lora), 0.8),))
    out = sampling.sample(loaded, image, tiny_request(seed=5))
    assemble.release()
    return out


def test_huggingface_hub_wrote_the_layout(linked):
    folder = linked / "models--Wan-AI--Wan2.1-I2V-tiny-Diffusers"
    commit = (folder / "refs" / "main").read_text()
    shard = folder / "snapshots" / commit / "transformer" / "diffusion_pytorch_model.safetensors"
    assert shard.is_symlink() and hc.blob_of(shard).parent == folder / "blobs"


def test_sets_and_lora_found_in_the_cache(cache):
    sets = {s.name: s for s in volume.find_model_sets()}
    assert sets[SET].complete and sets[SET].layout == "diffusers"
    assert sets[SET].root.parent.parent.name == "models--Wan-AI--Wan2.1-I2V-tiny-Diffusers"
    assert sets[COMFY_SET].complete, sets[COMFY_SET].missing
    assert [lf.name for lf in volume.find_loras()] == [LORA]
    doc = volume_status()
    hf = doc["hf_cache"]
    assert hf["found"] == [str(cache)] and hf["state_file"].startswith(str(cache.parent / "state"))
    assert {s["name"] for s in hf["model_sets"]} == {SET, COMFY_SET} and doc["ready"]
    assert hf["loras"][0]["name"] == LORA
    res = cli("status", env={hf_cache.ENV_CACHES: str(cache)})
    assert f"its hash records go to {hf['state_file']}" in res.stdout, res.stdout + res.stderr
    assert f"{SET} " in res.stdout and hc.DIFFUSERS_REPO in res.stdout and LORA in res.stdout


def test_same_frames_as_the_plain_folder_and_nothing_written(cache, plain_frames, image):
    before = hc.tree(cache)
    sets = {s.name: s for s in volume.find_model_sets()}
    lora = next(lf.path for lf in volume.find_loras() if lf.name == LORA)
    for name in (SET, COMFY_SET):
        np.testing.assert_array_equal(frames(sets[name], image, lora), plain_frames[name], err_msg=name)
    hashed = [f for f in sets[SET].files() + [lora] if hf_verify.published(f) is not None]
    assert hashed and all(hf_verify.remembered(f) for f in hashed), "hashed once and remembered"
    volume_status()
    assert hc.tree(cache) == before, "nothing may be written into the cache"


def test_hashed_once_across_loads(cache, monkeypatch):
    from spies import Calls
    found = volume.get_model_set(SET)
    calls = Calls(monkeypatch, hf_verify.hashing, "hash_file")
    assemble.load(found, "bf16")
    assemble.release()
    first = calls.count
    assemble.load(found, "bf16")
    assemble.release()
    assert first >= 1 and calls.count == first, "a second load must not hash again"


@pytest.mark.parametrize("readahead", ["auto", "off"])
def test_changed_blob_refused_naming_file_and_fix(cache, monkeypatch, readahead):
    """Hashed in the read-ahead's pass (auto) or before the load (off): refused either way, and
    nothing of the set is left resident."""
    monkeypatch.setenv("WAN_VOLUME_READAHEAD", readahead)
    found = volume.get_model_set(SET)
    shard = found.root / "transformer" / "diffusion_pytorch_model.safetensors"
    real = shard.resolve()
    hc.writable(cache)
    hc.flip_byte(real)
    with pytest.raises(hf_verify.HfCacheMismatch) as err:
        assemble.load(found, "bf16")
    msg = str(err.value)
    assert str(shard) in msg and "hf download Wan-AI/Wan2.1-I2V-tiny-Diffusers" in msg
    assert str(real) in msg and "SHA-256" in msg
    assert not hf_verify.remembered(shard)
    assert assemble.resident() is None


def test_half_downloaded_blob_refused_naming_file_and_fix(cache):
    found = volume.get_model_set(SET)
    shard = found.root / "transformer" / "diffusion_pytorch_model.safetensors"
    real = shard.resolve()
    hc.writable(cache)
    blobs = cache / "models--Wan-AI--Wan2.1-I2V-tiny-Diffusers" / "blobs"
    part = blobs / f"{real.name if real.parent == blobs else 'a' * 64}.incomplete"
    part.write_bytes(real.read_bytes()[:1000])       # what an interrupted download leaves
    shard.unlink()
    if real.parent == blobs:
        real.unlink()
    volume.clear_index()
    with pytest.raises(ModelSetNotFound) as err:
        volume.get_model_set(SET)
    msg = str(err.value)
    assert str(part) in msg and "did not finish" in msg
    assert "`hf download Wan-AI/Wan2.1-I2V-tiny-Diffusers`" in msg
    (s,) = [s for s in volume_status()["hf_cache"]["model_sets"] if s["name"] == SET]
    assert not s["complete"] and any(str(part) in m for m in s["missing"])


def test_refs_main_chosen_over_an_older_snapshot(plain, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    with FakeHub() as hub:
        hub.add_repo(hc.LORA_REPO, {hc.LORA_FILE: b"old"})
        hc.download(hub, hc.LORA_REPO, cache)
        old = (cache / "models--Remade-AI--kissing" / "refs" / "main").read_text()
        hub.add_repo(hc.LORA_REPO, hc.files_of(plain / "kissing-lora"))
        new = hc.download(hub, hc.LORA_REPO, cache).name
    assert old != new
    monkeypatch.setenv(hf_cache.ENV_CACHES, str(cache))
    (snap,) = hf_cache.snapshots(cache)
    assert (snap.revision, snap.ref) == (new, "main")
    (cache / "models--Remade-AI--kissing" / "refs" / "main").unlink()   # no ref: every snapshot
    assert {s.revision for s in hf_cache.snapshots(cache)} == {old, new}


def test_wan_original_repo_pth_checked_against_its_blob_name(tmp_path, monkeypatch):
    """Wan-AI's original repo in a cache: its pickled .pth load without trust because the blob
    name is their SHA-256; a changed blob is refused."""
    from wan_engine.load.layouts import build, pth
    src = lw.write_wan(tmp_path / "src", lw.representable(build_components(seed=0)))
    cache = tmp_path / "hub"
    with FakeHub() as hub:
        hub.add_repo("Wan-AI/Wan2.1-I2V-tiny-720P", hc.files_of(src))
        snap = hc.download(hub, "Wan-AI/Wan2.1-I2V-tiny-720P", cache)
    monkeypatch.setenv(hf_cache.ENV_CACHES, str(cache))
    monkeypatch.setenv(hf_verify.ENV_STATE_DIR, str(tmp_path / "state"))
    monkeypatch.delenv(build.ENV_TRUST_PTH, raising=False)
    volume.clear_index()
    found = volume.get_model_set("Wan2.1-I2V-tiny-720P")
    assert found.layout == "wan" and found.root == snap
    vae = snap / "Wan2.1_VAE.pth"
    pth._verified.clear()
    assert "encoder.conv1.weight" in pth.load_pth(vae)
    assert hf_verify.remembered(vae)
    pth._verified.clear()
    hc.flip_byte(vae.resolve(), 100)
    with pytest.raises(hf_verify.HfCacheMismatch, match="hf download Wan-AI/Wan2.1-I2V-tiny-720P"):
        pth.load_pth(vae)
    volume.clear_index()
