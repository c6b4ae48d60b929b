"""Wan2.2's two experts under ComfyUI's memory manager: one on the GPU at a time where both do not fit.

The sampler enters ``sample_high`` and ``sample_low`` around each expert's steps (sample/experts.py).
There this hook asks ComfyUI's ``load_models_gpu`` for the expert about to run, as the memory
plan decided (``loaded.plan.experts``, wan_engine/load/plan.py; the sampler re-plans for its
video size and the usable VRAM first): with "swap" the other expert is moved back to RAM first
(ComfyUI's ``model_unload``: its RAM copy is kept, so both experts stay in RAM, one expert's
bytes each); with "both" both are loaded and nothing moves at the boundary.
"""
from __future__ import annotations

import contextlib
import logging

from . import memory_plan
from ..wan_engine.load import assemble
from ..wan_engine.load.assemble import LoadedPipeline
from ..wan_engine.sample.experts import PHASE, ROLE
from ..wan_engine.sample.phases import PhaseHook

log = logging.getLogger("wanvolume")
EXPERT_OF = {phase: expert for expert, phase in PHASE.items()}


def phase_hook(loaded: LoadedPipeline) -> PhaseHook:
    @contextlib.contextmanager
    def phase(name: str):
        if name in EXPERT_OF:
            enter(loaded, EXPERT_OF[name])
        yield
    return phase


def enter(loaded: LoadedPipeline, expert: str) -> None:
    """The expert ``expert`` on the GPU through ComfyUI, the other one off it when both do not fit."""
    import comfy.model_management as mm

    patchers = {p.model.component: p for p in getattr(loaded.placement, "patchers", ())}
    other = "transformer_2" if expert == "transformer" else "transformer"
    if expert not in patchers or other not in patchers:
        # diffusers' offload hooks move the experts (offload model/block/...); streamed block by
        # block, the kept blocks of the expert about to run take the other one's place
        if loaded.offload == "block":
            brought = assemble.bring_kept_blocks(loaded.pipe, expert, loaded.device)
            log.info("Wan2.2 %s expert phase: its %d kept blocks on %s, the other expert's in RAM",
                     ROLE[expert], brought, loaded.device)
        return
    plan = getattr(loaded, "plan", None)
    working = plan.phase("sample").working_bytes if plan is not None else 0
    budget = memory_plan.usable_vram(mm, loaded.device)
    mine, theirs = patchers[expert].model_size(), patchers[other].model_size()
    held = {id(e.model) for e in mm.current_loaded_models}
    both = plan is not None and plan.experts == "both"       # no plan: one at a time, the safe side
    swapped = not both and id(patchers[other]) in held
    if swapped:
        memory_plan.unload(mm, [patchers[other]])
    wanted = [patchers[expert], patchers[other]] if both else [patchers[expert]]
    mm.load_models_gpu(wanted, memory_required=working, force_full_load=True)
    ours = {id(p): n for n, p in patchers.items()}
    now = sorted(ours[id(e.model)] for e in mm.current_loaded_models if id(e.model) in ours)
    log.info("Wan2.2 %s expert phase: ComfyUI holds %s; %s (plan: experts %s; experts %.1f + %.1f MiB, "
             "working %.1f MiB, usable %.1f MiB; both experts kept in RAM: %.1f MiB)", ROLE[expert],
             ", ".join(n for n in now if n.startswith("transformer")) or "no expert",
             f"swapped out the {ROLE[other]} expert" if swapped else "no swap",
             plan.experts if plan is not None else "unplanned",
             mine / 2**20, theirs / 2**20, working / 2**20, min(budget, 2**50) / 2**20,
             (mine + theirs) / 2**20)
