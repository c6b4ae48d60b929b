"""The memory plan in ComfyUI: which plan a set loads with, and the per-phase hook that follows it.

``offload=auto`` (the loader's default) loads with the plan for the VRAM ComfyUI reports as usable
(total minus --reserve-vram and the CUDA context) at 1280x720x81, the largest common video; an
explicit offload wins, and ComfyUI's --lowvram means block offload, --novram sequential. The
sampler re-plans for its own size within the loaded mode (``loaded.plan``) and enters
``phase_hook(loaded)`` around each phase: it moves our components the plan places off the GPU
for that phase back to RAM (the RAM copy is kept), then asks ComfyUI's ``load_models_gpu`` for
the phase's components and its working memory, so other nodes' models make room for ours.

``WAN_VOLUME_VRAM_GB`` overrides the usable VRAM the plan sees, in GiB, with nothing subtracted
(not the card's size; a smaller budget on a big card, or a GPU-sized plan on the CPU in tests).
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch

from ..wan_engine.load import plan as memplan
from ..wan_engine.load import sizes
from ..wan_engine.load.assemble import LoadedPipeline
from ..wan_engine.sample.phases import COMPONENTS, PhaseHook

log = logging.getLogger("wanvolume")

ENV_VRAM = "WAN_VOLUME_VRAM_GB"
PLAN_SIZE = (1280, 720, 81)          # what `auto` loads for: the largest common video
_counted: dict[tuple, sizes.SetSizes] = {}


def usable_vram(mm, device: torch.device) -> int:
    """The VRAM the plan may use: WAN_VOLUME_VRAM_GB, else ComfyUI's total less its reserve."""
    env = os.environ.get(ENV_VRAM, "").strip()
    if env:
        return int(float(env) * 2**30)
    if device.type == "cpu":
        return 2**60                   # the CPU computes where the weights are: nothing moves
    return memplan.usable_vram(mm.get_total_memory(device), mm.extra_reserved_memory())


def set_sizes(model_set) -> sizes.SetSizes:
    key = (str(model_set.root), model_set.name)
    if key not in _counted:
        _counted[key] = sizes.from_model_set(model_set)
    return _counted[key]


def choose(model_set, precision: str, offload: str, fp8_storage: bool,
           size: tuple[int, int, int] | None = None) -> tuple[str, bool, memplan.Plan]:
    """(offload, fp8_storage, plan) a set loads with: the plan's for ``auto``, else the choice's.

    ``auto`` keeps the mode the set is resident with (no second read of the volume); the
    sampler's re-plan for its size then says whether that mode fits. Without a resident set it
    plans for ``size`` (the sampler's) or PLAN_SIZE (the loader node's)."""
    import comfy.model_management as mm

    from ..wan_engine.load import assemble

    res = assemble.resident()
    device = mm.get_torch_device()
    if (offload == "auto" and res is not None and not res.dropped and res.plan is not None
            and res.key[:3] == (str(model_set.root), model_set.name, precision)):
        kept = res.offload, bool(res.key[5]), res.plan
        if size is None or mm.vram_state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM):
            return kept
        best = memplan.plan_for(set_sizes(model_set), usable_vram(mm, device), *size, precision=precision)
        if (best.offload, best.fp8_storage) == kept[:2] or not best.fits:
            return kept
        # the set was loaded for another size (the loader plans for 1280x720x81): the fastest
        # placement for this video differs (e.g. fp8 resident instead of streaming), so load it once
        log.info("offload=auto: %dx%dx%d runs faster as %s than the resident %s; loading it so",
                 *size, best.mode, res.plan.mode)
        return best.offload, best.fp8_storage, best
    size = size or PLAN_SIZE
    flags = {mm.VRAMState.LOW_VRAM: "block", mm.VRAMState.NO_VRAM: "sequential"}
    if offload == "auto" and mm.vram_state in flags:
        offload = flags[mm.vram_state]
        log.info("ComfyUI runs with --%s: offload=%s for the Wan set", mm.vram_state.name.lower()
                 .replace("_", ""), offload)
    force = _mode_for(offload, fp8_storage)
    chosen = memplan.plan_for(set_sizes(model_set), usable_vram(mm, device), *size,
                              precision=precision, force=force)
    if offload == "auto":
        return chosen.offload, chosen.fp8_storage or fp8_storage, chosen
    return offload, fp8_storage, chosen


def _mode_for(offload: str, fp8_storage: bool) -> tuple[str, ...] | None:
    """The plan modes an explicit choice allows, fastest first (None: the plan chooses)."""
    if offload == "auto":
        return None
    if offload in ("none", "model"):
        return ("fp8",) if fp8_storage else ("resident", "swap")
    return {"block": ("fp8_block",) if fp8_storage else ("block",), "sequential": ("sequential",)}[offload]


def replan(loaded: LoadedPipeline, width: int, height: int, frames: int) -> memplan.Plan:
    """The loaded mode's plan for this video size; stored as ``loaded.plan``."""
    import comfy.model_management as mm

    fp8 = bool(loaded.key[5]) if len(loaded.key) > 5 else False     # assemble.load's key: fp8_storage
    force = _mode_for("none" if loaded.offload == "model" else loaded.offload, fp8)
    precision = {torch.float16: "fp16", torch.float32: "fp32"}.get(loaded.dtype, "bf16")
    loaded.plan = memplan.plan_for(set_sizes(loaded.model_set), usable_vram(mm, loaded.device), width,
                                   height, frames, precision=precision, force=force)
    log.info("Wan set %s runs %dx%dx%d with %s", loaded.model_set.name, width, height, frames,
             loaded.plan.summary())
    return loaded.plan


def resident_plan() -> dict | None:
    """The resident set's plan for the status route: {"set", "mode", "summary"} or None."""
    from ..wan_engine.load import assemble

    loaded = assemble.resident()
    plan = getattr(loaded, "plan", None)
    if loaded is None or plan is None or loaded.dropped:
        return None
    return {"set": loaded.model_set.name, "mode": plan.mode, "summary": plan.summary()}


def phase_hook(loaded: LoadedPipeline) -> PhaseHook:
    """Brings to the GPU what each phase uses, as the plan says (a no-op without patchers)."""
    @contextlib.contextmanager
    def phase(name: str):
        _enter(loaded, name)
        yield
    return phase


def _enter(loaded: LoadedPipeline, name: str) -> None:
    import comfy.model_management as mm

    placement = loaded.placement
    patchers = {p.model.component: p for p in getattr(placement, "patchers", ())}
    plan = getattr(loaded, "plan", None)
    if not patchers or plan is None or name not in memplan.PLAN_PHASE:
        return                  # sample_high / sample_low: nodes/expert_swap.py moves the experts
    planned = plan.phase(memplan.PLAN_PHASE[name])
    out = [patchers[n] for n, part in planned.components.items() if part.device == "cpu" and n in patchers]
    if "transformer_2" in patchers and patchers["transformer_2"] not in out and any(
            p is patchers.get("transformer") for p in out):
        out.append(patchers["transformer_2"])           # Wan2.2's low-noise expert leaves with the high one
    unload(mm, out)
    # a part the plan leaves on the CPU for its own phase computes there (the umT5 on 12 GB cards)
    wanted = [patchers[n] for n in COMPONENTS[name] if n in patchers and planned.components[n].device != "cpu"]
    if plan.mode == "resident":
        wanted = [p for n, p in patchers.items() if n != "transformer_2"]   # expert_swap brings it
    # this step's own room (the image step's VAE encode evicts the umT5 where the plan says so)
    mm.load_models_gpu(wanted, memory_required=max(0, planned.working_for(name)), force_full_load=True)
    held = sorted(e.model.model.component for e in mm.current_loaded_models if id(e.model) in
                  {id(p) for p in patchers.values()})
    # ComfyUI's own loaded list, so the log shows what its memory manager holds, not our intent
    log.info("Wan phase %s (plan %s): ComfyUI holds %s; moved to RAM: %s", name, plan.mode,
             ", ".join(held) or "none of ours", ", ".join(p.model.component for p in out) or "nothing")
    dit = planned.components["transformer"]
    if "transformer" in COMPONENTS[name] and "transformer" not in patchers and loaded.device.type != "cpu":
        # the DiT streams through diffusers' hooks: ask ComfyUI for its blocks' room as well
        mm.free_memory(dit.gpu_bytes + planned.working_bytes + mm.extra_reserved_memory(), loaded.device)


def unload(mm, patchers: list) -> None:
    """Move these of our components off the GPU through ComfyUI (its RAM copy kept)."""
    ours = {id(p) for p in patchers}
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        entry = mm.current_loaded_models[i]
        if id(entry.model) in ours:
            mm.current_loaded_models.pop(i).model_unload()
