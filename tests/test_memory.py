"""The resident set under ComfyUI's real memory manager (comfy.model_management, CPU mode), in-process.

Registration with load_models_gpu, eviction by unload_all_models, the way back from RAM without a
second read of the volume, and the drop when RAM is short or free_memory is asked for.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import comfy_headless
from helpers import REPO, tiny_request
from wan_engine.load import assemble, footprint
from wan_engine.sample import sampling
from wan_engine import tiny_model
from wan_engine.store import find as volume
from spies import Calls
from pack import pack_module


@pytest.fixture(scope="module")
def mm():
    """ComfyUI's model_management as `main.py --cpu` sets it up (appended to sys.path: no shadowing)."""
    comfy_headless.import_comfyui()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management as mm

    assert mm.get_torch_device().type == "cpu"
    return mm


@pytest.fixture
def placed(mm, volume_env):
    """The tiny set loaded the way the nodes load it, released afterwards."""
    memory = pack_module("nodes.memory")

    assemble.release()
    model_set = volume.get_model_set(tiny_model.TINY_SET_NAME)

    def load():
        return assemble.load(model_set, "fp32", memory.effective_offload("none"),
                             device=mm.get_torch_device(), placement=memory.ComfyPlacement())

    yield load
    assemble.release()


def ours(mm) -> list[str]:
    return sorted(m.model.model.component for m in mm.current_loaded_models
                  if type(m.model.model).__name__ == "WanComponent")


def run(loaded) -> np.ndarray:
    memory = pack_module("nodes.memory")

    req = tiny_request()
    memory.make_room(loaded, req.width, req.height, req.frames)
    image = Image.open(REPO / "assets" / "two_people.png")
    return sampling.sample(loaded, image, req)


def test_footprint_counts_latent_tokens():
    assert footprint.latent_tokens(1280, 720, 81) == 21 * 45 * 80
    assert footprint.latent_tokens(832, 480, 81) == 21 * 30 * 52
    fp = footprint.sampling_footprint(1280, 720, 81)
    assert fp.bytes == int(21 * 45 * 80 * 5120 * 2 * footprint.ACTIVATION_FACTOR)
    assert 5 * 2**30 < fp.bytes < 20 * 2**30        # 720p x 81 on the 14B: some GiB, not MiB or TiB
    assert footprint.sampling_footprint(832, 480, 81).bytes < fp.bytes
    assert "latent tokens" in str(fp)


def test_ram_rule(monkeypatch):
    memory = pack_module("nodes.memory")

    monkeypatch.delenv("WAN_VOLUME_RAM_MARGIN_GB", raising=False)
    assert memory.ram_margin_bytes(64 * 2**30) == 64 * 2**30 // 10
    assert memory.ram_margin_bytes(8 * 2**30) == 2 * 2**30
    monkeypatch.setenv("WAN_VOLUME_RAM_MARGIN_GB", "0.5")
    assert memory.ram_margin_bytes(64 * 2**30) == 2**29
    assert memory.keep_in_ram(free_ram=40 * 2**30, moving=30 * 2**30, margin=4 * 2**30)
    assert not memory.keep_in_ram(free_ram=30 * 2**30, moving=28 * 2**30, margin=4 * 2**30)


def test_registered_evicted_and_back_from_ram(mm, placed, monkeypatch):
    loaded = placed()
    reads = Calls(monkeypatch, assemble, "layout_named")   # a build reads the volume
    assert ours(mm) == []                               # nothing on the compute device yet
    first = run(loaded)
    assert ours(mm) == ["image_encoder", "text_encoder", "transformer", "vae"]
    mm.unload_all_models()                              # what memory-cleanup nodes call
    assert ours(mm) == [] and not loaded.dropped
    again = placed()
    assert again is loaded and reads.count == 0   # no second read of the volume
    assert np.array_equal(run(again), first)
    assert len(ours(mm)) == 4


def test_ram_short_drops_and_next_load_reads_again(mm, placed, monkeypatch):
    loaded = placed()
    run(loaded)
    reads = Calls(monkeypatch, assemble, "layout_named")
    monkeypatch.setenv("WAN_VOLUME_RAM_MARGIN_GB", "1000000")
    mm.unload_all_models()
    assert loaded.dropped and ours(mm) == []
    assert loaded.pipe.transformer.device.type == "meta"       # the weights are gone, not moved
    monkeypatch.delenv("WAN_VOLUME_RAM_MARGIN_GB")
    fresh = placed()
    assert fresh is not loaded and reads.count == 1
    assert np.isfinite(run(fresh)).all()


def test_second_make_room_is_not_an_eviction(mm, placed, monkeypatch):
    """load_models_gpu re-registers a loaded model through detach(unpatch_all=False): no drop."""
    loaded = placed()
    run(loaded)
    monkeypatch.setenv("WAN_VOLUME_RAM_MARGIN_GB", "1000000")    # any real eviction would drop
    run(loaded)
    assert not loaded.dropped and len(ours(mm)) == 4


def test_free_memory_request_drops_an_idle_set(mm, placed):
    memory = pack_module("nodes.memory")

    loaded = placed()
    run(loaded)
    mm.unload_all_models()
    memory.request_drop()                 # what POST /free {"free_memory": true} calls
    assert loaded.dropped and loaded.pipe.vae.device.type == "meta"


def test_free_memory_request_while_registered_drops_at_unload(mm, placed):
    memory = pack_module("nodes.memory")

    loaded = placed()
    run(loaded)
    memory.request_drop()                 # registered: ComfyUI's unload_all_models follows
    assert not loaded.dropped
    mm.unload_all_models()
    assert loaded.dropped and ours(mm) == []


def test_free_memory_request_during_a_prompt_waits_for_the_eviction(mm, placed):
    memory = pack_module("nodes.memory")

    loaded = placed()
    run(loaded)
    mm.unload_all_models()                # in RAM, not registered
    memory.request_drop(idle=False)       # a prompt runs or waits: it may be about to use the set
    assert not loaded.dropped and loaded.pipe.vae.device.type == "cpu"
    run(loaded)                           # the prompt runs fine
    mm.unload_all_models()                # ComfyUI's flag handling after the prompt
    assert loaded.dropped


@pytest.mark.parametrize("state,offload", [("LOW_VRAM", "block"), ("NO_VRAM", "sequential"),
                                           ("NORMAL_VRAM", "none"), ("HIGH_VRAM", "none")])
def test_vram_flags_choose_who_places(mm, monkeypatch, volume_env, state, offload):
    """--lowvram/--novram: `auto` plans block/sequential offload (ComfyUI cannot partially load plain
    nn.Linear); an explicit offload, `none` included, wins under every state (docs/memory.md)."""
    memory, memory_plan = pack_module("nodes.memory"), pack_module("nodes.memory_plan")
    model_set = volume.get_model_set(tiny_model.TINY_SET_NAME)

    monkeypatch.setattr(mm, "vram_state", mm.VRAMState[state])
    monkeypatch.setattr(assemble, "resident", lambda: None)
    auto = memory_plan.choose(model_set, "fp32", "auto", False)[0]
    assert memory.effective_offload(auto) == offload
    for explicit in ("none", "model", "block", "sequential"):
        chosen = memory_plan.choose(model_set, "fp32", explicit, False)[0]
        assert memory.effective_offload(chosen) == explicit


def test_highvram_keeps_every_component_on_the_compute_device(mm, monkeypatch):
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.HIGH_VRAM)
    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("meta"))   # stands for the GPU
    memory = pack_module("nodes.memory")

    assert {str(memory._offload_device(mm, n)) for n in memory.COMPONENTS} == {"meta"}


def test_release_takes_our_components_out_of_comfy(mm, placed):
    run(placed())
    assert len(ours(mm)) == 4
    assert assemble.release()
    assert ours(mm) == [] and assemble.resident() is None


def test_release_does_not_wait_for_a_running_prompt(mm, placed):
    import threading

    loaded = placed()
    held, done = threading.Event(), threading.Event()

    def prompt():
        with loaded.lock:
            held.set()
            done.wait(10)

    t = threading.Thread(target=prompt)
    t.start()
    held.wait(10)
    try:
        assert assemble.release(wait=False) is False and assemble.resident() is loaded
    finally:
        done.set()
        t.join()
    assert assemble.release(wait=False) is True


def test_engine_placement_is_unchanged_without_comfy(volume_env):
    assemble.release()
    loaded = assemble.load(volume.get_model_set(tiny_model.TINY_SET_NAME), "fp32", "none",
                           device=torch.device("cpu"))
    try:
        assert isinstance(loaded.placement, assemble.DevicePlacement)
        assert loaded.pipe.transformer.device.type == "cpu"
    finally:
        assemble.release()


def test_wan_volume_vram_gb_is_the_usable_memory_not_the_card(monkeypatch):
    """WAN_VOLUME_VRAM_GB is what the plan may use: no reserve or CUDA context comes off it (README,
    docs/memory.md); without it the plan gets the card's total less ComfyUI's reserve."""
    from types import SimpleNamespace
    from wan_engine.load import plan as memplan
    memory_plan = pack_module("nodes.memory_plan")
    card = SimpleNamespace(get_total_memory=lambda device: 80 * 2**30, extra_reserved_memory=lambda: 2**30)
    monkeypatch.delenv(memory_plan.ENV_VRAM, raising=False)
    total = memory_plan.usable_vram(card, torch.device("cuda"))
    assert total == memplan.usable_vram(80 * 2**30, 2**30) < 79 * 2**30
    monkeypatch.setenv(memory_plan.ENV_VRAM, "10")
    assert memory_plan.usable_vram(card, torch.device("cuda")) == 10 * 2**30
