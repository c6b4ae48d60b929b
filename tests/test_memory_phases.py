"""Phase-wise residency under ComfyUI's real memory manager (CPU mode, in-process), with a small
plan forced by WAN_VOLUME_VRAM_GB: what ComfyUI holds when each phase starts."""
from __future__ import annotations

import contextlib
import gc
import weakref

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, tiny_request
import comfy_headless
from pack import pack_module as pack
from wan_engine import tiny_model
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


def ours(mm) -> list[str]:
    return sorted(m.model.model.component for m in mm.current_loaded_models
                  if type(m.model.model).__name__ == "WanComponent")


def run_with_phases(mm, vram_gb: str | None, monkeypatch, offload: str = "auto") -> tuple[dict, object]:
    """A prompt as the nodes run it; returns what ComfyUI held as each phase began."""
    memory_plan = pack("nodes.memory_plan")
    PipeHandle = pack("nodes.common").PipeHandle

    if vram_gb is None:
        monkeypatch.delenv(memory_plan.ENV_VRAM, raising=False)
    else:
        monkeypatch.setenv(memory_plan.ENV_VRAM, vram_gb)
    found = volume.get_model_set(tiny_model.TINY_SET_NAME)
    req = tiny_request()
    loaded = PipeHandle(found, found.name, "fp32", offload).load(room_for=(req.width, req.height, req.frames))
    seen: dict[str, list[str]] = {}

    @contextlib.contextmanager
    def probe(name: str):
        seen[name] = ours(mm)
        yield

    image = Image.open(REPO / "assets" / "two_people.png")
    out = sampling.sample(loaded, image, req, phase=phases.compose(memory_plan.phase_hook(loaded), probe))
    assert np.isfinite(out).all()
    return seen, loaded


@pytest.fixture
def clean(mm, volume_env):
    assemble.release()
    yield
    assemble.release()


def test_small_plan_swaps_the_encoders_out_before_sampling(mm, clean, monkeypatch):
    seen, loaded = run_with_phases(mm, "0.15", monkeypatch)
    assert loaded.plan.mode == "swap", loaded.plan.summary()
    # the tiny umT5's working memory does not fit beside it here: the plan computes it on the CPU
    # (as on a 12 GB card), so ComfyUI holds none of our parts while the text is encoded
    assert loaded.plan.phase("encode").components["text_encoder"].device == "cpu"
    assert seen["text_encode"] == []
    assert "image_encoder" in seen["image_encode"] and "vae" in seen["image_encode"]
    assert seen["sample"] == ["transformer"]               # the encoders left first
    assert "vae" in seen["decode"]
    assert loaded.pipe.text_encoder.device.type == "cpu" and not loaded.dropped   # kept in RAM
    assert loaded.plan.to_dict()["phases"][1]["components"]["text_encoder"]["device"] == "cpu"


def test_roomy_plan_keeps_everything(mm, clean, monkeypatch):
    seen, loaded = run_with_phases(mm, None, monkeypatch)
    assert loaded.plan.mode == "resident"
    everything = ["image_encoder", "text_encoder", "transformer", "vae"]
    assert seen["text_encode"] == seen["sample"] == seen["decode"] == everything


def test_explicit_offload_wins_over_the_plan(mm, clean, monkeypatch):
    _, loaded = run_with_phases(mm, "0.2", monkeypatch, offload="none")
    assert loaded.offload == "none" and loaded.plan.mode in ("resident", "swap")
    memory_plan = pack("nodes.memory_plan")
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.LOW_VRAM)
    found = volume.get_model_set(tiny_model.TINY_SET_NAME)
    assert memory_plan.choose(found, "bf16", "auto", False)[0] == "block"    # --lowvram
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    assert memory_plan.choose(found, "bf16", "auto", False)[0] == "sequential"
    assert memory_plan.choose(found, "bf16", "none", False)[0] == "none"


def test_honest_size_counts_the_tied_embedding_once(mm, clean, monkeypatch):
    _, loaded = run_with_phases(mm, None, monkeypatch)
    te = next(p for p in loaded.placement.patchers if p.model.component == "text_encoder")
    module = loaded.pipe.text_encoder
    naive = sum(t.nbytes for t in module.state_dict().values())
    shared = module.shared.weight.nbytes
    assert te.model_size() <= naive - shared + 4096


def test_replacing_the_set_frees_it(mm, clean, monkeypatch):
    _, loaded = run_with_phases(mm, "0.15", monkeypatch)
    refs = [weakref.ref(loaded.pipe.transformer), weakref.ref(loaded.pipe.text_encoder), weakref.ref(loaded)]
    del loaded
    assert assemble.release()
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_release_frees_the_weights_even_when_something_keeps_the_module(mm, clean, monkeypatch):
    """A stored traceback (or a compiled graph, or a hook) keeping a module must not keep its memory."""
    _, loaded = run_with_phases(mm, "0.15", monkeypatch)
    kept = loaded.pipe.transformer                      # what a traceback's frame would hold
    storages = [weakref.ref(t.untyped_storage()) for m in (kept, loaded.pipe.vae, loaded.pipe.text_encoder)
                for t in m.state_dict().values()]
    del loaded
    assert assemble.release()
    gc.collect()
    assert all(s() is None for s in storages) and kept.proj_out.weight.device.type == "meta"
