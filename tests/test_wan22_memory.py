"""Wan2.2's experts under ComfyUI's real memory manager (CPU mode, in-process): with a budget that
fits one expert, one expert is held at a time and they swap at the boundary; with room, both stay."""
from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, tiny_request
from wan22_fixtures import DIFFUSERS_NAME, wan22_volumes  # noqa: F401 (fixture)
import comfy_headless
from pack import pack_module as pack
from wan_engine.load import assemble
from wan_engine.sample import phases, sampling
from wan_engine.store import find as volume


@pytest.fixture(scope="module")
def mm():
    comfy_headless.import_comfyui()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management as mm

    return mm


@pytest.fixture
def wan22_env(wan22_volumes, tmp_path, monkeypatch):
    vol = tmp_path / "models"
    shutil.copytree(wan22_volumes / "diffusers", vol)
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(vol))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    assemble.release()
    yield vol
    assemble.release()


def experts_held(mm) -> list[str]:
    return sorted(m.model.model.component for m in mm.current_loaded_models
                  if type(m.model.model).__name__ == "WanComponent"
                  and m.model.model.component.startswith("transformer"))


def run(mm, monkeypatch, budget_for) -> tuple[dict, object]:
    memory_plan, expert_swap = pack("nodes.memory_plan"), pack("nodes.expert_swap")
    PipeHandle = pack("nodes.common").PipeHandle
    monkeypatch.delenv(memory_plan.ENV_VRAM, raising=False)
    found = volume.get_model_set(DIFFUSERS_NAME)
    req = tiny_request(steps=4, boundary=0.9)
    loaded = PipeHandle(found, found.name, "fp32", "none").load(room_for=(req.width, req.height, req.frames))
    sizes = {p.model.component: p.model_size() for p in loaded.placement.patchers}
    working = loaded.plan.phase("sample").working_bytes
    monkeypatch.setenv(memory_plan.ENV_VRAM, str(budget_for(sizes, working) / 2**30))
    memory_plan.replan(loaded, req.width, req.height, req.frames)     # as the sampler node does
    seen: dict[str, list[str]] = {}

    @contextlib.contextmanager
    def probe(name: str):
        yield
        seen[name] = experts_held(mm)      # after the hooks ran: what the phase computes with

    hook = phases.compose(memory_plan.phase_hook(loaded), expert_swap.phase_hook(loaded), probe)
    out = sampling.sample(loaded, Image.open(REPO / "assets" / "two_people.png"), req, phase=hook)
    assert np.isfinite(out).all()
    return seen, loaded


def test_one_expert_at_a_time_when_both_do_not_fit(mm, wan22_env, monkeypatch, caplog):
    caplog.set_level("INFO", logger="wanvolume")
    seen, loaded = run(mm, monkeypatch,
                       lambda s, w: s["transformer"] + w + s["transformer_2"] // 2)   # one expert fits
    assert seen["sample_high"] == ["transformer"]
    assert seen["sample_low"] == ["transformer_2"]                 # the high one left at the boundary
    assert loaded.plan.experts == "swap"                           # the plan's decision, obeyed
    assert loaded.pipe.transformer.device.type == "cpu" and not loaded.dropped   # kept in RAM
    assert "low-noise expert phase: ComfyUI holds transformer_2; swapped out the high-noise expert" in caplog.text


def test_both_experts_stay_when_they_fit(mm, wan22_env, monkeypatch, caplog):
    caplog.set_level("INFO", logger="wanvolume")
    seen, loaded = run(mm, monkeypatch, lambda s, w: 8 * 2**30)   # every phase fits both (the VAE's
    # per-call estimate alone is ~0.1 GiB)
    assert loaded.plan.experts == "both"
    assert seen["sample_high"] == seen["sample_low"] == ["transformer", "transformer_2"]   # both resident
    assert "no swap" in caplog.text and "swapped out" not in caplog.text
