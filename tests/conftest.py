"""Shared fixtures: the tiny volume (built once per run) and a real ComfyUI server."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

# Tests see only the Hugging Face caches they name (a developer's ~/.cache/huggingface/hub would
# add its sets and LoRAs to every listing); tests/test_hf_cache*.py set their own.
os.environ.setdefault("WAN_VOLUME_HF_CACHE", "off")

ARTIFACTS = Path(os.environ.get("WANVOLUME_ARTIFACTS", REPO / "test-artifacts"))


def _tiny_volume_cache() -> Path:
    """A cache dir keyed by the tiny model's source, so edits rebuild it."""
    src = (REPO / "wan_engine" / "tiny_model.py").read_bytes()
    return REPO / ".cache" / f"tiny-volume-{hashlib.sha256(src).hexdigest()[:12]}"


@pytest.fixture(scope="session")
def tiny_volume_template() -> Path:
    from wan_engine import tiny_model

    cache = _tiny_volume_cache()
    if not (cache / tiny_model.TINY_SET_NAME / "model_index.json").is_file():
        tmp = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tiny_model.ensure_demo_set(tmp)
        tiny_model.ensure_demo_lora(tmp)
        tiny_model.ensure_demo_distill_lora(tmp)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_volume(tiny_volume_template: Path, tmp_path_factory) -> Path:
    """A models dir with the tiny diffusers set and a kissing-style LoRA (read-only use)."""
    vol = tmp_path_factory.mktemp("volume") / "models"
    shutil.copytree(tiny_volume_template, vol)
    return vol


@pytest.fixture
def volume_env(tiny_volume: Path, monkeypatch) -> Path:
    """Point the resolution order at the tiny volume only."""
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(tiny_volume))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    return tiny_volume


@pytest.fixture(scope="session")
def comfy_server(tiny_volume: Path, tmp_path_factory):
    """A real ComfyUI (CPU) with the pack installed and the tiny volume as its models dir."""
    from comfy_headless import ComfyServer

    base = tmp_path_factory.mktemp("comfy")
    server = ComfyServer(base, tiny_volume, extra_args=["--preview-method", "latent2rgb"]).start()
    yield server
    server.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.log_path, ARTIFACTS / "comfyui-server.log")


@pytest.fixture
def loaded(volume_env):
    """The tiny set resident in fp32: the engine tests' pipeline."""
    from wan_engine import tiny_model
    from wan_engine.load import assemble
    from wan_engine.store import find

    return assemble.load(find.get_model_set(tiny_model.TINY_SET_NAME), "fp32")
