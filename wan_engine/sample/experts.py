"""Wan2.2's two experts: which one denoises each step, with which guidance.

The rule is Wan's and diffusers' (``WanImageToVideoPipeline``): the high-noise expert
(``transformer``) runs while the timestep t >= boundary x 1000, the low-noise expert
(``transformer_2``) after. Each expert has its own guidance scale, and the negative prompt is
encoded whenever either runs guidance. Unlike diffusers 0.35-0.42, whose switch for guidance looks
at the first scale only (cfg 1 high with cfg 3.5 low runs no guidance at all), guidance here runs
exactly in the steps of the expert whose scale is above 1.

The experts' segments are contiguous (timesteps fall), and each is entered as its own phase
(``sample_high``, ``sample_low``): the nodes swap the experts on the GPU there and time each.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .. import rules
from ..errors import InvalidInput
from . import denoise
from .phases import PhaseHook, no_phase
from .schedules import NUM_TRAIN_TIMESTEPS, Stepper

log = logging.getLogger(__name__)

WAN22_BOUNDARY = 0.9          # Wan2.2 I2V A14B (wan/configs/wan_i2v_A14B.py: boundary 0.900)
EXPERTS = ("transformer", "transformer_2")
PHASE = {"transformer": "sample_high", "transformer_2": "sample_low"}
ROLE = {"transformer": "high-noise", "transformer_2": "low-noise"}


@dataclass(frozen=True)
class ExpertSchedule:
    """The boundary (fraction of the 1000 training timesteps) and each expert's guidance."""

    boundary: float = WAN22_BOUNDARY
    cfg_high: float = 3.5
    cfg_low: float = 3.5

    def expert_at(self, t: torch.Tensor | float) -> str:
        return "transformer" if float(t) >= self.boundary * NUM_TRAIN_TIMESTEPS else "transformer_2"

    def cfg_of(self, expert: str) -> float:
        return self.cfg_high if expert == "transformer" else self.cfg_low

    def segments(self, timesteps: torch.Tensor) -> list[tuple[str, list[int]]]:
        """[(expert, step indices)] in run order: the high expert's steps, then the low one's."""
        out: list[tuple[str, list[int]]] = []
        for i, t in enumerate(timesteps):
            expert = self.expert_at(t)
            if out and out[-1][0] == expert:
                out[-1][1].append(i)
            else:
                out.append((expert, [i]))
        return out

    @property
    def guided(self) -> bool:
        return max(self.cfg_high, self.cfg_low) > 1.0


def check_settings(boundary: object, cfg_low: object) -> None:
    """The two Wan2.2 inputs' own ranges (None: the set's default / the same as ``cfg``)."""
    if boundary is not None:
        rules.number("boundary", boundary, lo=0.001, hi=1.0, example=WAN22_BOUNDARY,
                     context=" (Wan2.2's switch from the high- to the low-noise expert: t >= boundary x 1000 "
                             "runs the high one; 0.9 is Wan's I2V value)")
    if cfg_low is not None:
        rules.number("cfg_low_noise", cfg_low, lo=1.0, example=3.5,
                     context=" (the low-noise expert's guidance; 1.0 switches it off)")


def check_family(two_experts: bool, boundary: object, cfg_low: object, set_name: str = "") -> None:
    """Wan2.2 inputs only where the set has two experts."""
    if two_experts:
        return
    for field, value in (("boundary", boundary), ("cfg_low_noise", cfg_low)):
        if value is not None:
            raise InvalidInput(
                f"is a Wan2.2 input (two experts), but the model set {set_name or ''} is a Wan2.1 set "
                "with one DiT".replace("  ", " "), field=field, value=value,
                fix="set it to 0 (unused) for a Wan2.1 set, or load a Wan2.2 I2V A14B set "
                    "(`python wanvolume.py preload --profile wan22-comfy-fp8`)", suggested=(0.0,))


def schedule_for(req) -> ExpertSchedule:
    """The request's experts schedule (``boundary``/``cfg_low`` None: Wan's 0.9 / the same as ``cfg``)."""
    return ExpertSchedule(WAN22_BOUNDARY if req.boundary is None else float(req.boundary), float(req.cfg),
                          float(req.cfg if req.cfg_low is None else req.cfg_low))


@torch.no_grad()
def denoise_experts(pipe, cond: denoise.Conditioning, stepper: Stepper, schedule: ExpertSchedule,
                    on_step: denoise.StepCallback | None = None, phase: PhaseHook = no_phase) -> torch.Tensor:
    """Every step with its expert and that expert's guidance; each segment in its own phase."""
    latents = cond.latents
    for expert, steps in schedule.segments(stepper.timesteps):
        model = getattr(pipe, expert)
        log.info("Wan2.2 %s expert: steps %d-%d of %d (cfg %g)", ROLE[expert], steps[0] + 1, steps[-1] + 1,
                 stepper.steps, schedule.cfg_of(expert))
        with phase(PHASE[expert]):
            for i in steps:
                latents = denoise.step(model, cond, stepper, i, latents, schedule.cfg_of(expert), on_step)
    return latents
