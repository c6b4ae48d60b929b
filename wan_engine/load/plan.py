"""The memory plan: the fastest placement of a set that fits the GPU, by arithmetic on sizes.

Pure arithmetic (no torch, no ComfyUI): ``make_plan`` takes the usable VRAM, the parts' weight
bytes (``sizes.Weights``) and the video size, and tries, fastest first:

  resident    every part on the GPU in every phase (nothing moves between prompts)
  swap        the DiT stays; the encoders come in for encoding and leave before sampling, the
              VAE comes in for decoding (what fits beside the DiT stays)
  fp8         as swap, the DiT's Linear weights stored in fp8 (about half the DiT)
  block       the DiT streamed block by block from RAM (diffusers group offload), as many blocks
              kept on the GPU as fit beside two in flight; 16-bit, then with fp8 storage
  sequential  every layer streamed (slowest; fits almost anything)

Wan2.2 sets (two experts, ``Weights.expert_2``): the modes are placed with one expert as the DiT
(one runs in each sampling phase), then ``experts`` says whether both stay on the GPU ("both":
the second expert beside the first wherever the DiT is on the GPU, every phase still fitting) or
only the running one ("swap": the other leaves at the boundary; both are kept in RAM,
``experts_ram_bytes``). nodes/expert_swap.py follows this decision.

Phases as the plan reports them: ``encode`` (text and image encoders, the VAE encoding the start
frame), ``sample`` (the DiT) and ``decode`` (the VAE). Each phase's peak is the weights it keeps
on the GPU plus its working memory (footprint.py). The decode tile is the largest that fits the
room the decode phase leaves.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import footprint
from .sizes import Weights

MODES = ("resident", "swap", "fp8", "block", "fp8_block", "sequential")
# the loader's `offload` each mode runs with; fp8 storage is a loader switch of its own
OFFLOAD = {"resident": "none", "swap": "none", "fp8": "none", "block": "block", "fp8_block": "block",
           "sequential": "sequential"}
ENCODERS = ("text_encoder", "image_encoder")
# the sampler's phases (sample/phases.py) -> the plan's phase that places the parts for it
PLAN_PHASE = {"text_encode": "encode", "image_encode": "encode", "sample": "sample", "decode": "decode"}
PARTS = ("transformer", "text_encoder", "image_encoder", "vae")
STREAMED_BLOCKS = 2            # group offload with streams: the running block and the next one
TILES = (0, 1024, 768, 512, 384, 256, 192, 128)   # 0: whole frames (fewest decoder calls)
SAFETY = 0.05                  # keep 5 % of the usable VRAM free: allocator fragmentation


@dataclass(frozen=True)
class Part:
    """Where one part is during a phase: ``split`` is partly on the GPU (offload streaming)."""

    device: str        # "gpu" | "cpu" | "split"
    dtype: str
    gpu_bytes: int

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "gpu_bytes": self.gpu_bytes}


@dataclass(frozen=True)
class Phase:
    name: str
    peak_bytes: int
    components: dict[str, Part]
    working_bytes: int = 0        # activations, video, decoder calls (inside peak_bytes)
    # the working memory of each sampler phase this plan phase covers, where they differ (encode:
    # text_encode, then image_encode); what the phase hook asks ComfyUI to make room for
    steps: tuple[tuple[str, int], ...] = ()

    def working_for(self, step: str) -> int:
        """The room the sampler phase ``step`` needs beside the weights it brings in."""
        return dict(self.steps).get(step, self.working_bytes)

    def on_gpu(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.components.items() if p.device == "gpu")

    def to_dict(self) -> dict:
        return {"name": self.name, "peak_bytes": self.peak_bytes,
                "components": {n: p.to_dict() for n, p in self.components.items()}}


@dataclass(frozen=True)
class Plan:
    """The placement a prompt runs with (``to_dict()``: the CLI's --json and the run report)."""

    mode: str
    vram_bytes: int
    fits: bool
    phases: tuple[Phase, ...]
    fp8_storage: bool = False
    resident_blocks: int = 0
    decode_tile: int = 0                       # 0: whole frames
    encode_tile: int = 0                       # 0: the start frame encoded untiled (the reference path)
    size: tuple[int, int, int] = (0, 0, 0)
    notes: tuple[str, ...] = field(default_factory=tuple)
    experts: str = ""                          # Wan2.2: "both" resident, or "swap" at the boundary
    experts_ram_bytes: int = 0                 # with "swap": the RAM both experts take

    @property
    def offload(self) -> str:
        return OFFLOAD[self.mode]

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.phases)

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def summary(self) -> str:
        """One line for the log and the loader's badge."""
        extra = f", {self.resident_blocks} DiT blocks resident" if self.mode.endswith("block") else ""
        tile = "whole frames" if not self.decode_tile else f"{self.decode_tile} px tiles"
        return (f"plan {self.mode}{extra}: peak {self.peak_bytes / 2**30:.1f} of "
                f"{self.vram_bytes / 2**30:.1f} GiB, decode in {tile}{self.experts_summary()}"
                + ("" if self.fits else " (DOES NOT FIT)"))

    def experts_summary(self) -> str:
        if self.experts == "both":
            return ", both Wan2.2 experts resident"
        if self.experts == "swap":
            return (", one Wan2.2 expert on the GPU at a time (swapped at the boundary; both kept in "
                    f"RAM: {self.experts_ram_bytes / 2**30:.1f} GiB)")
        return ""

    def to_dict(self) -> dict:
        return {"mode": self.mode, "offload": self.offload, "fp8_storage": self.fp8_storage,
                "fits": self.fits, "peak_bytes": self.peak_bytes, "vram_bytes": self.vram_bytes,
                "resident_blocks": self.resident_blocks, "decode_tile": self.decode_tile,
                "encode_tile": self.encode_tile,
                "size": "x".join(str(v) for v in self.size),
                "phases": [p.to_dict() for p in self.phases],
                **({"experts": self.experts, "experts_ram_bytes": self.experts_ram_bytes} if self.experts else {})}


@dataclass(frozen=True)
class Work:
    """Working memory of each phase for one video size."""

    encode: int        # the image phase: start-frame video and one untiled VAE encoder call
    text: int          # umT5 over 512 tokens
    sample: int
    sample_fp8_extra: int
    video: int = 0     # the decoded video the decode phase holds (fp32, every frame)

    def encode_tiled(self, tile: int, width: int, height: int) -> int:
        w, h = (width, height) if not tile else (min(tile, width), min(tile, height))
        return self.video + footprint.vae_call_bytes(w, h, encode=True)

    def decode(self, tile: int, width: int, height: int) -> int:
        w, h = (width, height) if not tile else (min(tile, width), min(tile, height))
        return footprint.vae_call_bytes(w, h) + self.video


def working_memory(w: Weights, width: int, height: int, frames: int, precision: str,
                   attention: str) -> Work:
    act_bytes = 4 if precision == "fp32" else 2
    sample = footprint.sampling_footprint(width, height, frames, w.hidden, act_bytes, attention).bytes
    # the VAE encodes the start frame padded to the whole video, untiled, one chunk at a time
    video = footprint.video_bytes(width, height, frames)
    encode = video + footprint.vae_call_bytes(width, height, encode=True)
    text = footprint.text_bytes(act_bytes)
    return Work(encode, text, sample, w.largest_bytes, video)


def make_plan(vram_bytes: int, w16: Weights, w8: Weights, width: int, height: int, frames: int,
              precision: str = "bf16", attention: str = "native",
              force: str | tuple[str, ...] | None = None) -> Plan:
    """The fastest plan that fits ``vram_bytes`` (usable) among the modes ``force`` allows
    (one name, a tuple, or None for all). Without a fitting mode the result is the last allowed
    mode with ``fits=False``.

    ``w16``/``w8``: the set's weights at ``precision`` and with fp8 DiT storage.
    """
    budget = int(vram_bytes * (1 - SAFETY))
    work = working_memory(w16, width, height, frames, precision, attention)
    modes = MODES if force is None else ((force,) if isinstance(force, str) else tuple(force))
    for mode in modes:
        weights = w8 if mode.startswith("fp8") else w16
        plan = _place(mode, weights, work, budget, (width, height, frames))
        if plan is not None:
            return Plan(**{**_with_experts(plan, weights, budget).__dict__, "vram_bytes": vram_bytes})
    last = modes[-1]
    weights = w8 if last.startswith("fp8") else w16
    plan = _place(last, weights, work, budget, (width, height, frames), strict=False)
    return Plan(**{**_with_experts(plan, weights, budget).__dict__, "vram_bytes": vram_bytes, "fits": False})


def _with_experts(plan: Plan, w: Weights, budget: int) -> Plan:
    """A Wan2.2 plan's expert decision: the second expert beside the first wherever the DiT is
    on the GPU if every phase still fits ("both"), else on the CPU throughout ("swap")."""
    if not w.expert_2:
        return plan
    both = tuple(_add_expert(p, Part(p.components["transformer"].device, w.transformer_dtype, w.expert_2))
                 for p in plan.phases)
    if (plan.mode in ("resident", "swap", "fp8") and all(p.peak_bytes <= budget for p in both)):
        return Plan(**{**plan.__dict__, "phases": both, "experts": "both"})
    off = tuple(_add_expert(p, Part("cpu", w.transformer_dtype, 0)) for p in plan.phases)
    return Plan(**{**plan.__dict__, "phases": off, "experts": "swap",
                   "experts_ram_bytes": w.transformer + w.expert_2})


def _add_expert(phase: Phase, part: Part) -> Phase:
    if part.device != "gpu":
        part = Part("cpu", part.dtype, 0)
    return Phase(phase.name, phase.peak_bytes + part.gpu_bytes,
                 {**phase.components, "transformer_2": part}, phase.working_bytes, phase.steps)


def _place(mode: str, w: Weights, work: Work, budget: int, size: tuple[int, int, int],
           strict: bool = True) -> Plan | None:
    if not mode.endswith("block"):
        return _place_with(mode, w, work, budget, size, strict, 0)
    room = budget - work.sample - w.dit_outside_blocks - STREAMED_BLOCKS * w.block_bytes
    if strict and room < 0:
        return None
    most = max(0, min(w.blocks, room // max(1, w.block_bytes)))
    if strict and most >= w.blocks:
        return None          # it would all fit: a resident mode is the better plan
    # the resident blocks stay on the GPU in every phase: as many as the encode and decode allow too
    for blocks in range(most, -1, -1):
        plan = _place_with(mode, w, work, budget, size, True, blocks)
        if plan is not None:
            return plan
    return None if strict else _place_with(mode, w, work, budget, size, False, 0)


def _place_with(mode: str, w: Weights, work: Work, budget: int, size: tuple[int, int, int],
                strict: bool, blocks: int) -> Plan | None:
    width, height, _ = size
    gpu = {n: Part("gpu", d, b) for n, d, b in _parts(w)}
    off = {n: Part("cpu", p.dtype, 0) for n, p in gpu.items()}
    encode_tile = 0
    if mode in ("resident", "swap", "fp8"):
        dit = kept = gpu["transformer"]
    elif mode.endswith("block"):
        dit = Part("split", w.transformer_dtype, w.dit_outside_blocks
                   + (blocks + STREAMED_BLOCKS) * w.block_bytes)
        kept = Part("split", w.transformer_dtype, blocks * w.block_bytes)    # between DiT calls
    else:
        dit = Part("split", w.transformer_dtype, w.largest_bytes)
        kept = Part("split", w.transformer_dtype, 0)
    extra = work.sample_fp8_extra if mode.startswith("fp8") else 0
    sample = _phase("sample", {**off, "transformer": dit}, work.sample + extra)
    if mode == "resident":
        encode = _phase("encode", gpu, work.encode)
        sample = _phase("sample", gpu, work.sample + extra)
    elif mode == "sequential":
        small = {n: Part("split", p.dtype, min(p.gpu_bytes, w.largest_bytes)) for n, p in gpu.items()}
        encode = _phase("encode", {**small, "transformer": dit}, work.encode)
    else:
        encode, encode_tile = _tiled_encode_phase(gpu, kept, work, budget, width, height)
    decode, tile = _decode_phase(mode, gpu, kept, work, budget, width, height)
    if mode == "resident":
        decode = _phase("decode", gpu, work.decode(tile, width, height))
    phases = (encode, sample, decode)
    fits = all(p.peak_bytes <= budget for p in phases)
    if strict and not fits:
        return None
    return Plan(mode, 0, fits, phases, mode.startswith("fp8"), blocks, tile, encode_tile, size)


def _parts(w: Weights) -> list[tuple[str, str, int]]:
    return [("transformer", w.transformer_dtype, w.transformer),
            ("text_encoder", w.text_encoder_dtype, w.text_encoder),
            ("image_encoder", "fp32", w.image_encoder), ("vae", "fp32", w.vae)]


def _phase(name: str, parts: dict[str, Part], working: int) -> Phase:
    ordered = {n: parts[n] for n in PARTS}
    return Phase(name, sum(p.gpu_bytes for p in ordered.values()) + working, ordered, working)


def _encode_phase(gpu: dict[str, Part], dit: Part, work: Work, budget: int) -> Phase:
    """Text, then image encoding: the umT5 may leave for the image's room (ComfyUI evicts it when
    asked for that room); the DiT stays through both when it fits beside them."""
    text = {"text_encoder": gpu["text_encoder"]}
    text_work = work.text
    if _weight(text) + work.text > budget:
        # a 12 GB card: the umT5 (10.6 GiB in bf16) computes on the CPU, only its embeddings move
        text, text_work = {"text_encoder": Part("cpu", gpu["text_encoder"].dtype, 0)}, 0
    image = {"image_encoder": gpu["image_encoder"], "vae": gpu["vae"]}
    if _weight(text) + _weight(image) + work.encode <= budget:
        image = {**image, **text}
    kept = {"transformer": dit}          # streamed: its resident blocks cannot leave
    if dit.device == "gpu" and max(_weight(text), _weight(image) + work.encode) + _weight(kept) > budget:
        kept = {}
    peak = max(_weight(text) + text_work, _weight(image) + work.encode) + _weight(kept)
    parts = {n: Part("cpu", p.dtype, 0) for n, p in gpu.items()} | text | image | kept
    if not kept:
        parts["transformer"] = Part("cpu" if dit.device == "gpu" else dit.device, dit.dtype, 0)
    ordered = {n: parts[n] for n in PARTS}
    # peak less every weight: the umT5 may be counted here though it leaves for the image's room,
    # so each step's own working memory travels with the phase (ComfyUI evicts by it)
    return Phase("encode", peak, ordered, peak - sum(p.gpu_bytes for p in ordered.values()),
                 (("text_encode", text_work), ("image_encode", work.encode)))


def _tiled_encode_phase(gpu: dict[str, Part], dit: Part, work: Work, budget: int, width: int,
                        height: int) -> tuple[Phase, int]:
    """The encode phase untiled where it fits (the reference path), else with the largest tile
    that fits (the 81-frame start video of 720p needs ~13 GiB untiled)."""
    phase = _encode_phase(gpu, dit, work, budget)
    if phase.peak_bytes <= budget:
        return phase, 0
    for tile in TILES[1:]:
        tiled = Work(work.encode_tiled(tile, width, height), work.text, work.sample, work.sample_fp8_extra,
                     work.video)
        phase = _encode_phase(gpu, dit, tiled, budget)
        if phase.peak_bytes <= budget:
            return phase, tile
    return phase, TILES[-1]


def _weight(parts: dict[str, Part]) -> int:
    return sum(p.gpu_bytes for p in parts.values())


def _decode_phase(mode: str, gpu: dict[str, Part], dit: Part, work: Work, budget: int, width: int,
                  height: int) -> tuple[Phase, int]:
    """The decode phase with the largest tile that fits; the DiT stays when there is room."""
    vae_only = {**{n: Part("cpu", p.dtype, 0) for n, p in gpu.items()}, "vae": gpu["vae"]}
    if mode == "sequential":
        vae_only["vae"] = Part("split", "fp32", 0)
    for keep_dit in ((True, False) if dit.device == "gpu" else (True,)):
        parts = {**vae_only, "transformer": dit} if keep_dit else vae_only
        if mode == "resident":
            parts = gpu
        for tile in TILES:
            phase = _phase("decode", parts, work.decode(tile, width, height))
            if phase.peak_bytes <= budget:
                return phase, tile
    tile = TILES[-1]
    return _phase("decode", vae_only, work.decode(tile, width, height)), tile


CUDA_CONTEXT = 600 * 2**20      # the CUDA context and cuBLAS workspace: on the card, not ours
DEFAULT_RESERVE = 400 * 2**20   # ComfyUI's default --reserve-vram on Linux


def usable_vram(card_bytes: int, reserve: int = DEFAULT_RESERVE) -> int:
    """What a card of ``card_bytes`` leaves for the set after the context and the reserve."""
    return max(0, card_bytes - CUDA_CONTEXT - reserve)


def plan_for(sizes, vram_bytes: int, width: int, height: int, frames: int, precision: str = "bf16",
             attention: str = "native", force: str | tuple[str, ...] | None = None) -> Plan:
    """``make_plan`` on a ``sizes.SetSizes`` (its 16-bit and fp8 prices at ``precision``).

    A Wan2.2 set whose expert files are fp8 already (Comfy-Org's fp8_scaled) keeps them in fp8
    (exact: nothing is re-rounded) where that keeps both experts resident and 16 bits would swap."""
    w16, w8 = sizes.weights(precision), sizes.weights(precision, fp8=True)
    plan = make_plan(vram_bytes, w16, w8, width, height, frames, precision, attention, force)
    if force is None and sizes.fp8_files and plan.experts == "swap" and not plan.fp8_storage:
        fp8 = make_plan(vram_bytes, w16, w8, width, height, frames, precision, attention, ("fp8",))
        if fp8.fits and fp8.experts == "both":
            return Plan(**{**fp8.__dict__, "notes": fp8.notes + (
                "fp8 files kept in fp8 so both Wan2.2 experts stay resident",)})
    return plan
