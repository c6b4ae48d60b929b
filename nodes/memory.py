"""The resident Wan pipeline as a citizen of ComfyUI's memory manager (comfy.model_management).

With ``offload=none`` each big component (transformer, text encoder, image encoder, VAE) is a
``ModelPatcher`` that ComfyUI loads to the GPU with ``load_models_gpu`` before sampling (after it
made room for the estimated activations) and moves back to RAM when another node needs VRAM or a
node calls ``unload_all_models()``. The RAM copy is kept, so the next prompt brings the weights
back from RAM, not from the volume, unless RAM runs short (free RAM below the margin after the
move; ``WAN_VOLUME_RAM_MARGIN_GB``) or ``POST /free {"free_memory": true}`` asks for it: then
the weights are dropped and the next prompt reads the volume again.

With ``offload=model``/``sequential`` diffusers' hooks move the components; ComfyUI is only
asked to free room for them. Under ComfyUI's ``--lowvram``/``--novram`` the loader's ``auto`` plans
block/sequential offload (memory_plan.choose; ComfyUI's partial loading needs comfy.ops layers,
diffusers uses plain nn.Linear); an explicit ``offload=none`` still wins and loads each component
whole (``force_full_load``). ``--highvram``/``--gpu-only`` make the offload device the GPU.
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from .common import watch_posts
from ..wan_engine.load import assemble
from ..wan_engine.load.assemble import LoadedPipeline
from ..wan_engine.load.footprint import sampling_footprint, transformer_hidden

log = logging.getLogger("wanvolume")

COMPONENTS = ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae")
META = torch.device("meta")
_drop_requested = threading.Event()   # POST /free {"free_memory": true} while a set was in use


def ram_margin_bytes(total_ram: int) -> int:
    """Free RAM to keep after moving the set to RAM: WAN_VOLUME_RAM_MARGIN_GB, else 10 % (>= 2 GiB)."""
    env = os.environ.get("WAN_VOLUME_RAM_MARGIN_GB", "").strip()
    if env:
        return int(float(env) * 2**30)
    return max(2 * 2**30, total_ram // 10)


def keep_in_ram(free_ram: int, moving: int, margin: int) -> bool:
    """Whether moving ``moving`` bytes to RAM still leaves ``margin`` free."""
    return free_ram - moving >= margin


def effective_offload(offload: str) -> str:
    """``offload`` as loaded: an explicit choice wins under every VRAM state (docs/memory.md);
    ``auto`` already became block/sequential under --lowvram/--novram (memory_plan.choose).
    Under those flags an explicit ``none`` is said once in the log, with the choice that offloads."""
    import comfy.model_management as mm

    flags = {mm.VRAMState.LOW_VRAM: ("lowvram", "block"), mm.VRAMState.NO_VRAM: ("novram", "sequential")}
    if offload == "none" and mm.vram_state in flags:
        flag, other = flags[mm.vram_state]
        _tell_once(f"ComfyUI runs with --{flag}, and the loader asks for offload=none: loading each Wan "
                   f"component whole, as asked (offload=auto or {other} streams it instead)")
    return offload


_told: set[str] = set()


def _tell_once(message: str) -> None:
    if message not in _told:
        _told.add(message)
        log.info(message)


class WanComponent(torch.nn.Module):
    """A pipeline component with a settable ``device`` (diffusers' is a read-only property)."""

    def __init__(self, name: str, module: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner = module
        self.component = name
        self.device = device

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def _patcher_class():
    import comfy.model_patcher

    class ResidentPatcher(comfy.model_patcher.ModelPatcher):
        """Asks its placement, as ComfyUI evicts it, whether to keep the RAM copy or drop it."""

        owner: "ComfyPlacement"

        def detach(self, unpatch_all=True):
            # unpatch_all=False is load_models_gpu re-registering a loaded model: nothing moves
            if unpatch_all:
                moving = self.loaded_size() if self.load_device != self.offload_device else 0
                if not self.owner.keep_on_eviction(self.model.component, moving):
                    self.owner.drop()       # offload device becomes meta: storage freed, not moved
            return super().detach(unpatch_all)

        def model_size(self):
            # counted afresh (LoRA adapters come and go) and each storage once (umT5's tied embedding)
            unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                      for t in self.model.state_dict().values() if t.device.type != "meta"}
            self.size = sum(unique.values())
            return self.size

    return ResidentPatcher


class ComfyPlacement:
    """The resident set's components as ModelPatchers (offload ``none``), or diffusers' hooks."""

    def __init__(self, plan=None) -> None:
        self.patchers: list = []
        self.loaded: LoadedPipeline | None = None
        self.plan = plan          # the memory plan it loads with: block streaming's resident blocks

    # -- assemble.Placement ------------------------------------------------------------------
    def attach(self, loaded: LoadedPipeline) -> None:
        import comfy.model_management as mm

        self.loaded = loaded
        if loaded.offload not in ("none", "block"):
            assemble.place_on_device(loaded.pipe, loaded.device, loaded.offload)
            return
        cls = _patcher_class()
        for name in COMPONENTS:
            module = getattr(loaded.pipe, name, None)
            if not isinstance(module, torch.nn.Module):
                continue
            if loaded.offload == "block" and name.startswith("transformer"):
                blocks = getattr(self.plan, "resident_blocks", 0) if loaded.offload == "block" else 0
                # diffusers' hooks move it; Wan2.2: one expert's kept blocks on the GPU at a time,
                # the low-noise expert's wait in RAM until its phase (expert_swap.py)
                assemble.stream_transformer(module, loaded.device, blocks,
                                            torch.device("cpu") if name == "transformer_2" else None)
                continue
            offload = _offload_device(mm, name)
            module.to(offload)
            patcher = cls(WanComponent(name, module, offload), load_device=loaded.device,
                          offload_device=offload)
            patcher.owner = self
            self.patchers.append(patcher)
        log.info("Wan set %s handed to ComfyUI's memory manager: %s", loaded.model_set.name,
                 ", ".join(f"{p.model.component} ({p.model_size() / 2**20:.0f} MiB, offload to "
                           f"{p.offload_device})" for p in self.patchers))

    def forget(self) -> None:
        """Take our patchers out of ComfyUI's loaded list (called by assemble.release)."""
        import comfy.model_management as mm

        ours = {id(p) for p in self.patchers}
        for i in range(len(mm.current_loaded_models) - 1, -1, -1):
            entry = mm.current_loaded_models[i]
            if id(entry.model) in ours:
                mm.current_loaded_models.pop(i)
                if entry.model_finalizer is not None:
                    entry.model_finalizer.detach()
        self.patchers.clear()

    # -- before sampling ---------------------------------------------------------------------
    def make_room(self, width: int, height: int, frames: int) -> None:
        """Plan this size; a resident plan loads every component now, the others phase by phase
        (memory_plan.phase_hook); diffusers' offload only gets room freed."""
        import comfy.model_management as mm

        from . import memory_plan

        loaded = self.loaded
        plan = memory_plan.replan(loaded, width, height, frames)
        hidden = transformer_hidden(loaded.pipe.transformer)
        estimate = sampling_footprint(width, height, frames, hidden, loaded.dtype.itemsize)
        log.info("asking ComfyUI for room to sample %dx%dx%d: %s", width, height, frames, estimate)
        if self.patchers and loaded.offload == "none" and plan.mode == "resident":
            mm.load_models_gpu(self.patchers, memory_required=estimate.bytes, force_full_load=True)
        elif self.patchers and loaded.offload == "none":
            return                                             # the phase hook loads, phase by phase
        elif loaded.device.type != "cpu":
            biggest = max((mm.module_size(m) for m in _modules(loaded.pipe)), default=0)
            need = estimate.bytes + (biggest if loaded.offload == "model" else 0)
            mm.free_memory(need + mm.extra_reserved_memory(), loaded.device)

    # -- eviction ----------------------------------------------------------------------------
    def keep_on_eviction(self, component: str, moving: int) -> bool:
        import comfy.model_management as mm

        if self.loaded is None or self.loaded.dropped:
            return False
        if _drop_requested.is_set():
            log.info("free_memory requested: dropping the Wan set from memory")
            return False
        free = mm.get_free_memory(torch.device("cpu"))
        margin = ram_margin_bytes(mm.get_total_memory(torch.device("cpu")))
        if keep_in_ram(free, moving, margin):
            log.info("ComfyUI unloaded the Wan %s; kept in RAM for the next prompt (%.1f GiB free)",
                     component, free / 2**30)
            return True
        log.warning("RAM is short (%.1f GiB free, %.1f GiB to move, margin %.1f GiB): dropping the "
                    "Wan set; the next prompt reads it from the volume again", free / 2**30,
                    moving / 2**30, margin / 2**30)
        return False

    def drop(self) -> None:
        """Free the weights without a RAM copy. Runs inside ComfyUI's free_memory, so it leaves
        ComfyUI's loaded list alone: registered components go to meta as ComfyUI detaches them."""
        import comfy.model_management as mm

        _drop_requested.clear()
        if self.loaded is not None and not self.loaded.dropped:
            log.info("dropping model set %s from memory", self.loaded.model_set.name)
            self.loaded.dropped = True
        registered = {id(e.model) for e in mm.current_loaded_models}
        for p in self.patchers:
            p.offload_device = META
            if id(p) not in registered:
                p.model.to(META)


def _offload_device(mm, name: str) -> torch.device:
    """Where ComfyUI keeps a component it is not using: --highvram/--gpu-only keep all on the GPU."""
    if mm.vram_state == mm.VRAMState.HIGH_VRAM:
        return mm.get_torch_device()
    if name.startswith("transformer"):
        return mm.unet_offload_device()
    return mm.vae_offload_device() if name == "vae" else mm.text_encoder_offload_device()


def _modules(pipe) -> list[torch.nn.Module]:
    return [m for n in COMPONENTS if isinstance(m := getattr(pipe, n, None), torch.nn.Module)]


def make_room(loaded: LoadedPipeline, width: int, height: int, frames: int) -> None:
    """The sampler's request for room before it runs (no-op for a pipeline loaded elsewhere)."""
    if isinstance(loaded.placement, ComfyPlacement):
        loaded.placement.make_room(width, height, frames)


def request_drop(idle: bool = True) -> None:
    """POST /free {"free_memory": true}: drop the weights now when no prompt runs or waits (the
    worker is idle, so none can be using them), else as ComfyUI evicts them after the prompt."""
    loaded = assemble.resident()
    if loaded is None or not isinstance(loaded.placement, ComfyPlacement):
        return
    if not idle or not loaded.lock.acquire(blocking=False):
        _drop_requested.set()
        return
    try:
        import comfy.model_management as mm

        registered = {id(e.model) for e in mm.current_loaded_models}
        if any(id(p) in registered for p in loaded.placement.patchers):
            _drop_requested.set()        # ComfyUI's unload_all_models detaches them right after
        else:
            loaded.placement.drop()
    finally:
        loaded.lock.release()


def install() -> None:
    """Watch ``POST /free`` for ``free_memory: true`` (ComfyUI itself only unloads to RAM)."""
    from server import PromptServer

    def free_memory_watch(body):
        if isinstance(body, dict) and body.get("free_memory"):
            request_drop(idle=PromptServer.instance.prompt_queue.get_tasks_remaining() == 0)

    watch_posts(("/free",), free_memory_watch)
