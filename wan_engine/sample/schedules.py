"""Noise schedules and step rules for flow-matching Wan: UniPC (the full workflows) and Euler.

Wan predicts the flow velocity v with x_t = (1 - sigma) * x0 + sigma * noise, so the denoised
estimate is x0 = x_t - sigma * v and an Euler step is x_next = x_t + (sigma_next - sigma) * v.
The step-distill LoRAs (lightx2v) were trained on four fixed sigmas: timesteps 1000/750/500/250
shifted with shift 5 (sigma' = shift * s / (1 + (shift - 1) * s)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import rules
from ..errors import InvalidInput

SAMPLERS = ("unipc", "euler")
SCHEDULES = ("auto", "distill_4step")
SAMPLER_HELP = {
    "unipc": "UniPC multistep on the scheduler's flow-shifted grid (Wan's default; full workflows)",
    "euler": "flow-matching Euler, one model evaluation per step (step-distilled LoRAs)",
}
SCHEDULE_HELP = {
    "auto": "the sampler's usual grid for `steps` and `shift`",
    "distill_4step": "lightx2v's 4 trained sigmas 1, 0.9375, 0.8333, 0.625 (then 0); needs steps = 4 "
                     "and sampler euler and cfg 1.0; `shift` is ignored (the list already has shift 5 "
                     "in it)",
}
DISTILL_SHIFT = 5.0
DISTILL_TIMESTEPS = (1000, 750, 500, 250)
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's flow shift: sigma' = shift * s / (1 + (shift - 1) * s)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def distill_sigmas() -> torch.Tensor:
    """1, 0.9375, 0.8333..., 0.625, 0: the four sigmas the lightx2v distill LoRAs were trained on."""
    s = torch.tensor(DISTILL_TIMESTEPS, dtype=torch.float64) / NUM_TRAIN_TIMESTEPS
    return torch.cat([shift_sigmas(s, DISTILL_SHIFT), torch.zeros(1, dtype=torch.float64)])


def euler_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Uniform timesteps 1000, 1000 - 1000/steps, ... shifted; then 0 (steps + 1 values)."""
    s = 1.0 - torch.arange(steps, dtype=torch.float64) / steps
    return torch.cat([shift_sigmas(s, shift), torch.zeros(1, dtype=torch.float64)])


def check_choice(sampler: str, schedule: str, steps: int, cfg: float | None = None) -> None:
    """Raise ``InvalidInput`` for a sampler/schedule pair that cannot run (and, given ``cfg``,
    guidance on a distilled schedule)."""
    rules.choice("sampler", sampler, list(SAMPLERS))
    rules.choice("schedule", schedule, list(SCHEDULES))
    if cfg is not None:
        rules.distill_cfg(schedule, cfg)
    if schedule == "distill_4step" and sampler != "euler":
        raise InvalidInput("distill_4step is a list of sigmas for the Euler sampler", field="sampler",
                           value=sampler, fix="use sampler euler with schedule distill_4step")
    if schedule == "distill_4step" and steps != len(DISTILL_TIMESTEPS):
        raise InvalidInput("schedule distill_4step has exactly 4 steps", field="steps", value=steps,
                           fix="use steps 4 with distill_4step, or schedule auto for other step counts")


@dataclass
class Stepper:
    """One sampler on one grid: ``timesteps`` for the model, ``sigma(i)``, and the update rule."""

    timesteps: torch.Tensor      # [steps], model time in 0..1000
    sigmas: torch.Tensor         # [steps + 1], float64 on the CPU, last one 0
    scheduler: object | None = None   # UniPC instance; None for Euler

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def denoised(self, i: int, latents: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        """x0 = x_t - sigma * v: what a preview shows."""
        return latents - float(self.sigmas[i]) * velocity

    def step(self, i: int, latents: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        if self.scheduler is not None:
            return self.scheduler.step(velocity, self.timesteps[i], latents, return_dict=False)[0]
        dt = float(self.sigmas[i + 1] - self.sigmas[i])
        return (latents.float() + dt * velocity.float()).to(latents.dtype)


def make_stepper(sampler: str, schedule: str, steps: int, shift: float, scheduler_config: dict,
                 device: torch.device) -> Stepper:
    """The stepper for a checked (sampler, schedule, steps, shift)."""
    check_choice(sampler, schedule, steps)
    if sampler == "unipc":
        from diffusers import UniPCMultistepScheduler

        sched = UniPCMultistepScheduler.from_config(scheduler_config, flow_shift=shift)
        sched.set_timesteps(steps, device=device)
        sched.set_begin_index(0)   # the stepper walks the grid from its first step (no search)
        return Stepper(sched.timesteps, sched.sigmas.double().cpu(), sched)
    sigmas = distill_sigmas() if schedule == "distill_4step" else euler_sigmas(steps, shift)
    timesteps = (sigmas[:-1] * NUM_TRAIN_TIMESTEPS).to(device=device, dtype=torch.float32)
    return Stepper(timesteps, sigmas)
