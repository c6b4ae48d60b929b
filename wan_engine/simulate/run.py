"""One video on the simulated card, placed phase by phase as the memory plan says.

``simulate`` builds the full-size set from fake tensors, places its parts for each phase of the
sampler (``sampling.generate``: the sampler's own text, image, sample and decode phases, UniPC,
classifier-free guidance as ``cfg`` asks, the plan's decode tile) and returns each plan phase's
measured peak, the weights on the card at that peak and its FLOPs. Block streaming keeps the
plan's ``resident_blocks`` on the card and brings every other block in just before it runs with
the next one in flight (diffusers' group offload with streams; two blocks beyond the resident).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..store.modelset import ModelSet
from ..load import plan as memplan
from ..load.assemble import PRECISIONS, LoadedPipeline
from ..sample import decode, phases, sampling
from . import fullsize
from .fakecard import CPU, CUDA, FakeCard, Measure, bytes_on, move

log = logging.getLogger(__name__)

PARTS = ("transformer", "text_encoder", "image_encoder", "vae")


@dataclass
class Simulation:
    plan: memplan.Plan
    attention: str
    phases: dict[str, Measure]

    def over(self) -> list[str]:
        """The plan phases whose measured peak exceeds the card (usable VRAM)."""
        return [n for n, m in self.phases.items() if m.peak_bytes > self.plan.vram_bytes]


class PlanPlacement:
    """Moves the fake parts where ``plan`` places them for each sampler phase."""

    def __init__(self, pipe, plan: memplan.Plan) -> None:
        self.pipe, self.plan = pipe, plan
        self.streamed: list[torch.nn.Module] = []
        if plan.mode == "sequential":
            raise NotImplementedError("sequential offload is not simulated")

    def phase(self, name: str):
        import contextlib

        planned = self.plan.phase(memplan.PLAN_PHASE[name])
        used = phases.COMPONENTS[name]
        for part in PARTS:
            where = "gpu" if self.plan.mode == "resident" else planned.components[part].device
            module = getattr(self.pipe, part)
            if where == "split":
                self._stream(module, memplan.PLAN_PHASE[name] == "sample")
            elif where == "cpu" or part in used or part == "transformer":
                move(module, CUDA if where == "gpu" else CPU)
        self._make_room(planned, used, planned.working_for(name))
        return contextlib.nullcontext()

    def _make_room(self, planned, used, working: int) -> None:
        """As the nodes' phase hook asks ComfyUI for the phase's working memory: parts this phase
        does not run leave the card (the umT5 before the image phase) when the room is short."""
        budget = int(self.plan.vram_bytes * (1 - memplan.SAFETY))
        modules = [getattr(self.pipe, p) for p in PARTS]
        for part in ("text_encoder", "image_encoder", "vae"):
            if bytes_on(modules) + working <= budget:
                return
            if part not in used and self.plan.mode != "resident":
                move(getattr(self.pipe, part), CPU)

    def _stream(self, dit, sampling: bool) -> None:
        """The DiT's blocks streamed, ``resident_blocks`` of them kept on the card in every phase;
        the parts outside the blocks come in while it samples (group offload's top-level group)."""
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
            move(block, CUDA if i in resident else CPU)
        if self.streamed:
            return
        self.streamed = blocks

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


def move_tensor(store: dict, key: str, device: torch.device) -> None:
    t = store[key]
    moved = t.detach().to(device)
    store[key] = torch.nn.Parameter(moved, requires_grad=False) if isinstance(t, torch.nn.Parameter) else moved


def simulate(plan: memplan.Plan, precision: str = "bf16", steps: int = 1, cfg: float = 5.0,
             attention: str = "flash", gguf: str | None = None) -> Simulation:
    """The whole video on a card of ``plan.vram_bytes``: each plan phase's measured peak."""
    width, height, frames = plan.size
    card = FakeCard(attention=attention)
    quiet = logging.getLogger(sampling.__name__)      # its sigmas line reads values fakes do not have
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    with card.running():
        pipe = fullsize.build_pipeline(PRECISIONS[precision], plan.fp8_storage,
                                       "480p" if height * width <= 832 * 480 else "720p",
                                       gguf=gguf)          # a GGUF DiT of that type (gguf_fake.py)
        card.weights = lambda: bytes_on([getattr(pipe, p) for p in PARTS])
        _photo_on_the_cpu(pipe, card.mode)
        placement = PlanPlacement(pipe, plan)
        # a Wan2.1 set's record, as the loader hands it to the sampler (no files: the weights are fakes)
        record = ModelSet(name="simulated {}x{}x{}".format(*plan.size), layout="simulated", root=Path("."))
        loaded = LoadedPipeline(key=("simulated",), model_set=record, pipe=pipe, dtype=PRECISIONS[precision],
                                device=CUDA, offload=plan.offload, load_seconds=0.0)
        req = sampling.SampleRequest(prompt="two people kiss", width=width, height=height, frames=frames,
                                     steps=steps, cfg=cfg, tiles=decode.tiles_for(plan.decode_tile),
                                     encode_tile=plan.encode_tile)
        hook = phases.compose(placement.phase, card.phase)
        try:
            sampling.generate(loaded, Image.new("RGB", (width, height)), req, phase=hook)
        finally:
            quiet.setLevel(level)
    return Simulation(plan, attention, _by_plan_phase(card.phases))


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
