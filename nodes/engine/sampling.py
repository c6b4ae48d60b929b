"""Image-to-video sampling on the resident pipeline.

``check_request`` refuses bad values before any model work. ``sample`` runs the denoising loop
with a per-step callback (progress, previews, interruption) and decodes with tiling.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import decode as vae_decode
from . import rules
from .assemble import LoadedPipeline

log = logging.getLogger(__name__)

WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
MAX_SIDE = rules.MAX_SIDE
MAX_FRAMES = rules.MAX_FRAMES
MAX_SEQ_LEN = 512   # Wan's attention assumes exactly 512 text tokens; never change this


@dataclass(frozen=True)
class SampleRequest:
    """Everything the sampler needs besides the pipeline and the image."""

    prompt: str
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    width: int = 1280
    height: int = 720
    frames: int = 81
    steps: int = 40
    cfg: float = 5.0
    shift: float = 5.0
    seed: int = 0
    tiles: vae_decode.TileSettings = field(default_factory=vae_decode.TileSettings)


def nearest_valid_frames(frames: int) -> tuple[int, int]:
    """The valid frame counts (4k+1) just below and above ``frames``."""
    below = max(1, ((frames - 1) // 4) * 4 + 1)
    return below, below if below >= frames else below + 4


def check_request(req: SampleRequest) -> None:
    """Raise ``InvalidInput`` naming the first value that breaks a rule (engine/rules.py)."""
    rules.sample_request(req)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover ``width`` x ``height`` and centre-crop, keeping the aspect ratio."""
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


StepCallback = Callable[[int, int, torch.Tensor], None]


def sample(loaded: LoadedPipeline, image: Image.Image, req: SampleRequest,
           on_step: StepCallback | None = None,
           on_decode: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run image-to-video; return frames as float32 [F, H, W, 3] in [0, 1].

    ``on_step(step, total, latents)`` runs after each denoising step; raising in it stops the
    run between steps (that is how ComfyUI's interrupt reaches here).
    """
    from diffusers import UniPCMultistepScheduler

    check_request(req)
    pipe = loaded.pipe
    with loaded.lock:
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=req.shift)

        def step_end(_pipe, i, _t, kwargs):
            if on_step is not None:
                on_step(i + 1, req.steps, kwargs["latents"])
            return {}

        generator = torch.Generator(device="cpu").manual_seed(req.seed)
        latents = pipe(image=fit_image(image, req.width, req.height), prompt=req.prompt,
                       negative_prompt=req.negative_prompt, height=req.height, width=req.width,
                       num_frames=req.frames, num_inference_steps=req.steps, guidance_scale=req.cfg,
                       generator=generator, output_type="latent", max_sequence_length=MAX_SEQ_LEN,
                       callback_on_step_end=step_end, return_dict=False)[0]
        video = vae_decode.decode(pipe.vae, latents, req.tiles, on_decode)
        pipe.maybe_free_model_hooks()
    frames = (video[0].permute(1, 2, 3, 0) + 1.0) / 2.0   # [F, H, W, 3]
    return frames.clamp(0, 1).numpy().astype(np.float32)
