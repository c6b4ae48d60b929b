"""WAN_VOLUME_WARMUP=<set|default>[,<lora>...]: load a set when ComfyUI starts, in the background.

The set loads as the loader node loads it with its defaults (bf16, offload auto, fp8 storage off),
through ComfyUI's memory manager; where the plan keeps every component on the GPU they go there
now (room for the plan's size), and the LoRAs named are read and attached, switched off. The whole
warm-up holds the resident set (assemble.exclusive), so a prompt that arrives meanwhile waits for
it and finds the set resident instead of reading the volume a second time. Its state is
``warming`` in GET /wan_volume/status (wan_engine/load/warmup.py).
WAN_VOLUME_WARMUP_RUN=WxHxF adds a rehearsal: one step of a video of that size through the
sampler's phases before ``ready``, so the first prompt runs as a warm one does.
"""
from __future__ import annotations

import logging
import os
import threading

from .common import PipeHandle, extra_lora_dirs, extra_set_dirs
from ..wan_engine.load import assemble, warmup
from ..wan_engine.store import find as volume

log = logging.getLogger(__name__)

PRECISION, OFFLOAD = "bf16", "auto"     # the loader node's defaults


def start() -> threading.Thread | None:
    """Start the warm-up the environment names; None when it is off."""
    parsed = warmup.parse_warmup(os.environ.get(warmup.ENV_WARMUP))
    if parsed is None:
        return None
    state = warmup.begin(*parsed)
    thread = threading.Thread(target=run, args=(state,), daemon=True, name="wan-volume-warmup")
    thread.start()
    return thread


def run(state: warmup.Warming) -> None:
    """Load, place and attach; every failure ends in ``failed`` with the reason, never a crash."""
    try:
        with assemble.exclusive():
            _warm(state)
    except Exception as exc:  # noqa: BLE001 - reported in the status route; the server serves on
        log.exception("WanVolume warm-up failed")
        state.finish(str(exc))
        return
    state.finish()


def _warm(state: warmup.Warming) -> None:
    from . import memory, memory_plan
    from .loader import check_files
    from ..wan_engine.lora import apply

    size = warmup.parse_rehearsal(os.environ.get(warmup.ENV_REHEARSAL))    # a bad value fails first
    found = warmup.choose_set(state.set, extra_set_dirs())
    if found is None:
        names = volume.complete_set_names(extra_set_dirs())
        raise ValueError(f"{warmup.ENV_WARMUP}: no complete model set named {state.set!r}; "
                         f"complete sets: {', '.join(names) or 'none'} (or use `default`)")
    check_files(found)
    state.set = found.name
    loras = [volume.get_lora(name, extra_lora_dirs()).path for name in state.loras]
    state.enter("reading")
    loaded = PipeHandle(found, found.name, PRECISION, OFFLOAD).load(on_progress=state.on_bytes)
    state.enter("to-device")
    memory.make_room(loaded, *memory_plan.PLAN_SIZE)
    if loras:
        state.enter("loras")
        with loaded.lock:
            for path in loras:
                apply.ensure_adapter(loaded, path)
    if size is not None:
        state.enter("rehearsal")
        rehearse(loaded, size)


def rehearse(loaded, size: tuple[int, int, int]) -> float:
    """One step of a video of ``size`` through the sampler node's own phases (memory plan, expert
    swap, the plan's tiles), LoRAs off, the output dropped: the first real prompt then finds the
    kernels, the allocator's blocks and the lazy first-call work of every phase already done."""
    import time

    from PIL import Image

    from . import expert_swap, memory_plan
    from .sampler import _plan_tiles
    from ..wan_engine.lora import apply, experts as lora_experts
    from ..wan_engine.sample import phases, sampling

    width, height, frames = size
    req = _plan_tiles(sampling.SampleRequest(prompt="warm-up", width=width, height=height, frames=frames,
                                             steps=1), loaded)
    began = time.monotonic()
    with loaded.lock:
        (lora_experts if loaded.model_set.two_experts else apply).activate(loaded, ())
        sampling.generate(loaded, Image.new("RGB", (width, height)), req,
                          phase=phases.compose(memory_plan.phase_hook(loaded), expert_swap.phase_hook(loaded)))
    took = time.monotonic() - began
    log.info("WanVolume warm-up rehearsal: 1 step of %dx%dx%d in %.1f s", width, height, frames, took)
    return took
