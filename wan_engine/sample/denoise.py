"""The denoising loop, written out so the sampler controls the sigmas and sees the model output.

It reuses the pipeline's own encoders (``encode_prompt``, ``encode_image``, ``prepare_latents``) and
calls the DiT exactly as ``WanImageToVideoPipeline.__call__`` does, so UniPC runs give the pipeline's
latents bit for bit. Classifier-free guidance runs a second (unconditional) DiT call only when
``cfg > 1``; at ``cfg == 1`` each step is one DiT evaluation.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image

from .decode import tiles_for, tiling
from .phases import PhaseHook, no_phase
from .schedules import Stepper

MAX_SEQ_LEN = 512   # Wan's attention assumes exactly 512 text tokens; never change this

# on_step(step, total, x0): after each step, with the denoised estimate of that step.
StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class Conditioning:
    """What the DiT gets besides the noisy latents, and the starting noise."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    image_embeds: torch.Tensor | None      # None for Wan2.2's experts (no CLIP image branch)
    condition: torch.Tensor      # mask + VAE-encoded start frame, concatenated to the latents
    latents: torch.Tensor        # the starting noise


@torch.no_grad()
def prepare(pipe, image: Image.Image, prompt: str, negative_prompt: str, width: int, height: int,
            frames: int, cfg: float, seed: int, phase: PhaseHook = no_phase,
            device: torch.device | None = None, encode_tile: int = 0) -> Conditioning:
    """Text, image and latent inputs, computed exactly as the diffusers pipeline computes them.

    The text and the image are encoded in their own phases (``phases.py``); ``device`` is where
    the DiT computes (default: the pipeline's execution device). ``encode_tile`` > 0 encodes the
    start video in tiles of that many pixels (the memory plan's, where untiled does not fit)."""
    device = device or pipe._execution_device
    dtype = pipe.transformer.dtype
    with phase("text_encode"):
        pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt,
                                      do_classifier_free_guidance=cfg > 1.0, num_videos_per_prompt=1,
                                      max_sequence_length=MAX_SEQ_LEN, device=device)
    with phase("image_encode"):
        # only a DiT with the CLIP image branch takes image embeddings (as the pipeline decides)
        image_embeds = (None if pipe.transformer.config.image_dim is None
                        else pipe.encode_image(image, device).repeat(1, 1, 1).to(dtype))
        pixels = pipe.video_processor.preprocess(image, height=height, width=width).to(device, torch.float32)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        tiles = tiles_for(encode_tile) if encode_tile else None
        with tiling(pipe.vae, tiles) if tiles else contextlib.nullcontext():
            latents, condition = pipe.prepare_latents(pixels, 1, pipe.vae.config.z_dim, height, width,
                                                      frames, torch.float32, device, generator)
    return Conditioning(pos.to(dtype), None if neg is None else neg.to(dtype), image_embeds,
                        condition, latents)


@torch.no_grad()
def denoise(transformer, cond: Conditioning, stepper: Stepper, cfg: float,
            on_step: StepCallback | None = None) -> torch.Tensor:
    """Run every step; return the final latents (normalised, float32)."""
    latents = cond.latents
    for i in range(stepper.steps):
        latents = step(transformer, cond, stepper, i, latents, cfg, on_step)
    return latents


@torch.no_grad()
def step(transformer, cond: Conditioning, stepper: Stepper, i: int, latents: torch.Tensor, cfg: float,
         on_step: StepCallback | None = None) -> torch.Tensor:
    """Step ``i`` with ``transformer`` at guidance ``cfg``; returns the next latents."""
    t = stepper.timesteps[i]
    model_input = torch.cat([latents, cond.condition], dim=1).to(transformer.dtype)
    timestep = t.expand(latents.shape[0])
    with transformer.cache_context("cond"):
        velocity = _dit(transformer, model_input, timestep, cond.prompt_embeds, cond.image_embeds)
    if cfg > 1.0:
        with transformer.cache_context("uncond"):
            uncond = _dit(transformer, model_input, timestep, cond.negative_embeds, cond.image_embeds)
        velocity = uncond + cfg * (velocity - uncond)
    x0 = stepper.denoised(i, latents, velocity) if on_step is not None else None
    latents = stepper.step(i, latents, velocity)
    if on_step is not None:
        on_step(i + 1, stepper.steps, x0)
    return latents


def _dit(transformer, hidden, timestep, text, image) -> torch.Tensor:
    return transformer(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text,
                       encoder_hidden_states_image=image, attention_kwargs=None, return_dict=False)[0]


class EvalCounter:
    """Counts the DiT's forward calls (a forward pre-hook), for the log line and the tests."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.count = 0
        self._handle = transformer.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.count += 1

    def close(self) -> None:
        self._handle.remove()
