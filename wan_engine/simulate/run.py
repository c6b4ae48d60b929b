"""One video on the simulated card, placed phase by phase as the memory plan says.

``simulate`` builds the full-size set from fake tensors, places its parts for each phase of the
sampler (``sampling.generate``: the sampler's own text, image, sample and decode phases, UniPC,
classifier-free guidance as ``cfg`` asks, the plan's decode tile) and returns each plan phase's
measured peak, the weights on the card at that peak and its FLOPs. Block streaming keeps the
plan's ``resident_blocks`` on the card and brings every other block in just before it runs with
the next one in flight (diffusers' group offload with streams; two blocks beyond the resident);
sequential offload brings each layer in just before it runs (accelerate's hooks). A Wan2.2 set
runs both experts, each in its phase, swapped as nodes/expert_swap.py has ComfyUI do it. Identical
repeated calls are replayed from their first measurement (replay.py).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..store.modelset import ModelSet
from ..load import plan as memplan
from ..load.assemble import PRECISIONS, LoadedPipeline
from ..load import assemble
from ..sample import decode, experts, phases, sampling, schedules
from . import fullsize
from .replay import Replay
from .fakecard import CPU, CUDA, FakeCard, Measure, WeightSlots, bytes_on, move

log = logging.getLogger(__name__)

PARTS = ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae")
EXPERT_OF = {phase: expert for expert, phase in experts.PHASE.items()}


@dataclass
class Simulation:
    plan: memplan.Plan
    attention: str
    phases: dict[str, Measure]
    calls: dict[str, int] = field(default_factory=dict)    # replay.py: measured / replayed

    def over(self) -> list[str]:
        """The plan phases whose measured peak exceeds the card (usable VRAM)."""
        return [n for n, m in self.phases.items() if m.peak_bytes > self.plan.vram_bytes]


class PlanPlacement:
    """Moves the fake parts where ``plan`` places them for each sampler phase. A Wan2.2 set's
    expert phases (``sample_high``/``sample_low``) do what nodes/expert_swap.py has ComfyUI do:
    "both" leaves both experts on the card; "swap" sends the other expert to RAM first; streamed
    block by block, ``assemble.bring_kept_blocks`` trades the experts' kept blocks."""

    def __init__(self, pipe, plan: memplan.Plan) -> None:
        self.pipe, self.plan = pipe, plan
        self.parts = [p for p in PARTS if isinstance(getattr(pipe, p, None), torch.nn.Module)]
        self.streamed: set[int] = set()

    def phase(self, name: str):
        if name in EXPERT_OF:
            self._enter_expert(EXPERT_OF[name])
            return contextlib.nullcontext()
        planned = self.plan.phase(memplan.PLAN_PHASE[name])
        used = phases.COMPONENTS[name]

        def where(part: str) -> str:
            # resident: everything on the card, but for Wan2.2's second expert as the plan says
            return planned.components[part].device if part == "transformer_2" or self.plan.mode != "resident" \
                else "gpu"
        # what leaves the card goes first (ComfyUI frees before it loads)
        for part in sorted(self.parts, key=lambda p: where(p) != "cpu"):
            module = getattr(self.pipe, part)
            if part == "transformer_2" and self.plan.mode.endswith("block"):
                self._stream(module, False, kept_on=CPU)     # streamed too; its kept blocks wait
            elif where(part) == "split" and self.plan.mode == "sequential":
                self._sequential(module)
            elif where(part) == "split":
                self._stream(module, memplan.PLAN_PHASE[name] == "sample")
            elif where(part) == "cpu" or part in used or part.startswith("transformer"):
                move(module, CUDA if where(part) == "gpu" else CPU)
        self._make_room(planned, used, planned.working_for(name))
        return contextlib.nullcontext()

    def _enter_expert(self, expert: str) -> None:
        other = "transformer_2" if expert == "transformer" else "transformer"
        if self.plan.mode.endswith("block"):
            self._stream(getattr(self.pipe, other), False, kept_on=CPU)
            self._stream(getattr(self.pipe, expert), True)
            assemble.bring_kept_blocks(self.pipe, expert, CUDA, move=move)
        elif self.plan.experts != "both":
            move(getattr(self.pipe, other), CPU)
            move(getattr(self.pipe, expert), CUDA)

    def _make_room(self, planned, used, working: int) -> None:
        """As the nodes' phase hook asks ComfyUI for the phase's working memory: parts this phase
        does not run leave the card (the umT5 before the image phase) when the room is short."""
        budget = int(self.plan.vram_bytes * (1 - memplan.SAFETY))
        modules = [getattr(self.pipe, p) for p in self.parts]
        for part in ("text_encoder", "image_encoder", "vae"):
            if bytes_on(modules) + working <= budget:
                return
            if part in self.parts and part not in used and self.plan.mode != "resident":
                move(getattr(self.pipe, part), CPU)

    def _sequential(self, module) -> None:
        """diffusers' sequential CPU offload (accelerate's hooks): every module with tensors of its
        own comes to the card just before it runs and leaves right after."""
        move(module, CPU)
        if id(module) in self.streamed:
            return
        self.streamed.add(id(module))
        def onload(sub, args, kwargs):         # accelerate also brings the inputs to the card
            move(sub, CUDA, recurse=False)
            return _to_card(args), {k: _to_card(v) for k, v in kwargs.items()}

        for sub in module.modules():
            if any(t is not None for t in (*sub._parameters.values(), *sub._buffers.values())):
                sub.register_forward_pre_hook(onload, with_kwargs=True)
                sub.register_forward_hook(lambda m, args, out: move(m, CPU, recurse=False))

    def _stream(self, dit, sampling: bool, kept_on: torch.device = CUDA) -> None:
        """The DiT's blocks streamed, ``resident_blocks`` of them kept (on ``kept_on``) in every
        phase; the parts outside the blocks come in while it samples (group offload's top-level
        group)."""
        blocks = list(dit.blocks)
        resident = set(range(self.plan.resident_blocks))
        outside = CUDA if sampling else CPU
        for name, child in dit.named_children():
            if name != "blocks":
                move(child, outside)
        for key in list(dit._parameters) + list(dit._buffers):
            store = dit._parameters if key in dit._parameters else dit._buffers
            if store[key] is not None and store[key].device != outside:
                move_tensor(store, key, outside)
        for i, block in enumerate(blocks):
            move(block, kept_on if i in resident else CPU)
            block.wan_kept = i in resident            # as assemble.keep_blocks marks them
        if id(dit) in self.streamed:
            return
        self.streamed.add(id(dit))

        def pre(i):
            def hook(module, args):
                move(module, CUDA)
                if i + 1 < len(blocks):
                    move(blocks[i + 1], CUDA)        # the next block is copied while this one runs
            return hook

        def post(i):
            def hook(module, args, output):
                if i not in resident:
                    move(module, CPU)
            return hook

        for i, block in enumerate(blocks):
            if i not in resident:
                block.register_forward_pre_hook(pre(i))
                block.register_forward_hook(post(i))


def _to_card(value):
    if isinstance(value, torch.Tensor):
        return value.to(CUDA)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_card(v) for v in value)
    return value


def move_tensor(store: dict, key: str, device: torch.device) -> None:
    t = store[key]
    moved = t.detach().to(device)
    store[key] = torch.nn.Parameter(moved, requires_grad=False) if isinstance(t, torch.nn.Parameter) else moved


def simulate(plan: memplan.Plan, precision: str = "bf16", steps: int = 1, cfg: float = 5.0,
             attention: str = "flash", replay: bool = True, scaled: bool = False,
             gguf: str | None = None) -> Simulation:
    """The whole video on a card of ``plan.vram_bytes``: each plan phase's measured peak.
    ``replay``: identical repeated calls (the DiT's blocks, the VAE's per-frame coder calls) are
    measured once and replayed (replay.py); False runs every one of them. ``scaled``: the set's
    DiT is a scaled fp8 file (its scales kept with the fp8 layers where the plan stores fp8).
    ``gguf`` ("Q8_0", "Q4_K", ...): a GGUF DiT of that type (gguf_fake.py)."""
    width, height, frames = plan.size
    card = FakeCard(attention=attention)
    quiet = logging.getLogger(sampling.__name__)      # its sigmas line reads values fakes do not have
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    two = bool(plan.experts)             # a Wan2.2 plan: two experts
    with card.running():
        pipe = fullsize.build_pipeline(PRECISIONS[precision], plan.fp8_storage,
                                       "480p" if height * width <= 832 * 480 else "720p", scaled, two, gguf)
        card.weights = WeightSlots([getattr(pipe, p) for p in PARTS if getattr(pipe, p, None) is not None]).bytes_on
        _photo_on_the_cpu(pipe, card.mode)
        replayed = Replay(card)
        if replay and plan.mode != "sequential":     # its weights move inside the calls: run them all
            dits = [pipe.transformer, pipe.transformer_2] if two else [pipe.transformer]
            replayed.install([*(b for d in dits for b in d.blocks), pipe.vae.encoder, pipe.vae.decoder])
        placement = PlanPlacement(pipe, plan)
        # the set's record, as the loader hands it to the sampler (no files: the weights are fakes)
        record = ModelSet(name="simulated {}x{}x{}".format(*plan.size), layout="simulated", root=Path("."),
                          components={"transformer": Path("."), "transformer_2": Path(".")} if two else {})
        loaded = LoadedPipeline(key=("simulated",), model_set=record, pipe=pipe, dtype=PRECISIONS[precision],
                                device=CUDA, offload=plan.offload, load_seconds=0.0)
        req = sampling.SampleRequest(prompt="two people kiss", width=width, height=height, frames=frames,
                                     steps=steps, cfg=cfg, tiles=decode.tiles_for(plan.decode_tile),
                                     encode_tile=plan.encode_tile)
        if two:
            req = _both_experts_run(req, pipe.scheduler.config)
        measured = phases.compose(placement.phase, lambda name: card.phase(name) if name in memplan.PLAN_PHASE
                                  else contextlib.nullcontext())
        try:
            with _real_expert_segments(req, pipe.scheduler.config):
                sampling.generate(loaded, Image.new("RGB", (width, height)), req, phase=measured)
        finally:
            quiet.setLevel(level)
    log.info("simulated calls: %d measured, %d replayed", replayed.calls["measured"], replayed.calls["replayed"])
    return Simulation(plan, attention, _by_plan_phase(card.phases), dict(replayed.calls))


def _real_segments(schedule, req, scheduler_config) -> list:
    """``schedule.segments`` over the request's timesteps, built for real on the CPU."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        stepper = schedules.make_stepper(req.sampler, req.schedule, req.steps, req.shift, scheduler_config, CPU)
        return _ORIGINAL_SEGMENTS(schedule, stepper.timesteps)


_ORIGINAL_SEGMENTS = experts.ExpertSchedule.segments


def _both_experts_run(req, scheduler_config):
    """Wan2.2: at least as many steps as make both experts run (the high one above the boundary,
    then the low one), so both their phases are simulated."""
    import dataclasses

    schedule = experts.schedule_for(req)
    for steps in range(max(2, req.steps), 41):
        trial = dataclasses.replace(req, steps=steps)
        if len(_real_segments(schedule, trial, scheduler_config)) == 2:
            return trial
    return req


@contextlib.contextmanager
def _real_expert_segments(req, scheduler_config):
    """Which expert runs a step depends on the timestep's value, which a fake tensor does not
    have: the segments come from the same stepper built for real on the CPU."""
    experts.ExpertSchedule.segments = lambda self, timesteps: _real_segments(self, req, scheduler_config)
    try:
        yield
    finally:
        experts.ExpertSchedule.segments = _ORIGINAL_SEGMENTS


def _photo_on_the_cpu(pipe, mode) -> None:
    """The start frame's preprocessing runs for real (small CPU work whose checks read pixel
    values, which fake tensors do not have); its result enters the card as a fake tensor."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    real = pipe.video_processor.preprocess

    def preprocess(*args, **kwargs):
        with unset_fake_temporarily():
            out = real(*args, **kwargs)
        return mode.from_tensor(out)
    pipe.video_processor.preprocess = preprocess


def _by_plan_phase(measures: dict[str, Measure]) -> dict[str, Measure]:
    out: dict[str, Measure] = {}
    for name, m in measures.items():
        agg = out.setdefault(memplan.PLAN_PHASE[name], Measure())
        if m.peak_bytes >= agg.peak_bytes:
            agg.peak_bytes, agg.weight_bytes = m.peak_bytes, m.weight_bytes
        agg.flops += m.flops
    return out
