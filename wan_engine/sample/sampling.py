"""Image-to-video sampling on the resident pipeline.

``check_request`` refuses bad values before any model work. ``sample`` fits the photo, runs the
denoising loop (denoise.py) with the chosen sampler and schedule (schedules.py) and speed options
(speed.py), logs how many DiT evaluations it made, and decodes with tiling (decode.py).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import decode as vae_decode
from . import denoise, experts, schedules, speed
from .. import rules
from ..errors import InvalidInput
from ..load import fp8
from ..load.assemble import LoadedPipeline
from .phases import PhaseHook, no_phase
from .denoise import MAX_SEQ_LEN, StepCallback  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
MAX_SIDE = rules.MAX_SIDE
MAX_FRAMES = rules.MAX_FRAMES
FITS = ("crop", "pad", "keep")
FIT_HELP = {
    "crop": "cover width x height and centre-crop (nothing stretched; edges may be cut)",
    "pad": "fit inside width x height and letterbox with black bars (nothing cut)",
    "keep": "keep the photo's aspect ratio at about width x height pixels, sides snapped to "
            "multiples of 16: the video size then differs from width/height",
}


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
    sampler: str = "unipc"
    schedule: str = "auto"
    fit: str = "crop"
    boundary: float | None = None   # Wan2.2: the experts' switch (None: Wan's 0.9); Wan2.1: None
    cfg_low: float | None = None    # Wan2.2: the low-noise expert's guidance (None: ``cfg``)
    encode_tile: int = 0     # >0: the start video VAE-encoded in tiles (the memory plan's, small cards)


def nearest_valid_frames(frames: int) -> tuple[int, int]:
    """The valid frame counts (4k+1) just below and above ``frames``."""
    below = max(1, ((frames - 1) // 4) * 4 + 1)
    return below, below if below >= frames else below + 4


def check_request(req: SampleRequest) -> None:
    """Raise ``InvalidInput`` naming the first value that breaks a rule (wan_engine/rules.py)."""
    rules.sample_request(req)
    schedules.check_choice(req.sampler, req.schedule, req.steps, req.cfg)
    rules.choice("fit", req.fit, list(FITS))
    experts.check_settings(req.boundary, req.cfg_low)


def output_size(photo: tuple[int, int], req: SampleRequest) -> tuple[int, int]:
    """The video's (width, height): the request's, or for ``fit="keep"`` the photo's aspect ratio
    at the same pixel area, each side snapped to a multiple of 16 within 16..MAX_SIDE."""
    if req.fit != "keep":
        return req.width, req.height
    aspect = photo[0] / photo[1]
    area = req.width * req.height

    def snap(v: float) -> int:
        return min(MAX_SIDE, max(16, round(v / 16) * 16))

    return snap(math.sqrt(area * aspect)), snap(math.sqrt(area / aspect))


def fit_image(image: Image.Image, width: int, height: int, fit: str = "crop") -> Image.Image:
    """The photo as a ``width`` x ``height`` start frame: cover and crop, or letterbox ("pad").

    Cropping picks the covered region in the photo's own pixels and resizes only that region, so
    memory stays bounded by the output size whatever the photo's aspect ratio (a 1 x 4000 strip
    scaled to cover 832 x 480 first would be 832 x 3,328,000 pixels).
    """
    image = image.convert("RGB")
    if fit == "pad":
        scale = min(width / image.width, height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = Image.new("RGB", (width, height))
        canvas.paste(image.resize(size, Image.LANCZOS), ((width - size[0]) // 2, (height - size[1]) // 2))
        return canvas
    scale = max(width / image.width, height / image.height)
    crop_w, crop_h = min(image.width, width / scale), min(image.height, height / scale)
    left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
    return image.resize((width, height), Image.LANCZOS, box=(left, top, left + crop_w, top + crop_h))


def sample(loaded: LoadedPipeline, image: Image.Image, req: SampleRequest,
           on_step: StepCallback | None = None,
           on_decode: Callable[[int, int], None] | None = None,
           options: speed.SpeedSettings = speed.SpeedSettings(),
           mag_ratios_file: Path | None = None, phase: PhaseHook = no_phase) -> np.ndarray:
    """Run image-to-video; return frames as float32 [F, H, W, 3] in [0, 1] (see ``generate``)."""
    video = generate(loaded, image, req, on_step, on_decode, options, mag_ratios_file, phase)
    frames = (video[0].permute(1, 2, 3, 0) + 1.0) / 2.0   # [F, H, W, 3]
    return frames.clamp(0, 1).numpy().astype(np.float32)


def generate(loaded: LoadedPipeline, image: Image.Image, req: SampleRequest,
             on_step: StepCallback | None = None,
             on_decode: Callable[[int, int], None] | None = None,
             options: speed.SpeedSettings = speed.SpeedSettings(),
             mag_ratios_file: Path | None = None, phase: PhaseHook = no_phase) -> torch.Tensor:
    """Every phase of image-to-video; return the decoded video [1, 3, F, H, W] in [-1, 1].

    ``on_step(step, total, x0)`` runs after each denoising step with the denoised estimate;
    raising in it stops the run between steps (that is how ComfyUI's interrupt reaches here).
    The pipeline lock is held throughout (it is re-entrant: callers may hold it already), and the
    offload hooks are released however the run ends. ``phase(name)`` is entered around each phase
    (text_encode, image_encode, sample, decode; see phases.py).
    """
    check_request(req)
    experts.check_family(loaded.model_set.two_experts, req.boundary, req.cfg_low, loaded.model_set.name)
    speed.check_combination(options, fp8.stored_in_fp8(loaded.pipe.transformer))
    if loaded.model_set.two_experts and options.cache != "none":
        raise InvalidInput("step caches are calibrated for one DiT; a Wan2.2 set has two experts",
                           field="cache", value=options.cache, fix="use cache none with a Wan2.2 set")
    width, height = output_size(image.size, req)
    start = fit_image(image, width, height, req.fit)
    pipe = loaded.pipe
    with loaded.lock:
        try:
            latents = _denoise(loaded, start, req, width, height, on_step, options, mag_ratios_file, phase)
            with phase("decode"):
                video = vae_decode.decode(pipe.vae, latents, req.tiles, on_decode)
        finally:
            pipe.maybe_free_model_hooks()
    return video


def _denoise(loaded: LoadedPipeline, start: Image.Image, req: SampleRequest, width: int, height: int,
             on_step: StepCallback | None, options: speed.SpeedSettings,
             mag_ratios_file: Path | None, phase: PhaseHook = no_phase) -> torch.Tensor:
    pipe, dit = loaded.pipe, loaded.pipe.transformer
    two = loaded.model_set.two_experts
    dits = [dit, pipe.transformer_2] if two else [dit]
    # where it computes: with ComfyUI's placement the parts wait in RAM until their phase, so the
    # pipeline's own _execution_device (the first part's device) would say CPU
    device = loaded.device
    stepper = schedules.make_stepper(req.sampler, req.schedule, req.steps, req.shift,
                                     pipe.scheduler.config, device)
    for model in dits:
        backend = speed.apply_attention(model, options.attention, loaded.device)
        speed.apply_compile(model, options.compile, loaded.device)
        speed.apply_fp8_matmul(model, options.fp8_matmul, loaded.device)
    speed.apply_cache(dit, options.cache, req.steps, options.cache_threshold, mag_ratios_file)
    log.info("speed options: attention %s, compile %s, cache %s, fp8 matmul %s", backend,
             "on" if options.compile else "off", options.cache, "on" if options.fp8_matmul else "off")
    plan = experts.schedule_for(req) if two else None
    guided = plan.guided if plan else req.cfg > 1.0
    cond = denoise.prepare(pipe, start, req.prompt, req.negative_prompt, width, height, req.frames,
                           2.0 if guided else 1.0, req.seed, phase, device, req.encode_tile)
    counters = [denoise.EvalCounter(m) for m in dits]
    try:
        with speed.MagCalibration() as calibration, phase("sample"):
            if plan is not None:
                latents = experts.denoise_experts(pipe, cond, stepper, plan, on_step, phase)
            else:
                latents = denoise.denoise(dit, cond, stepper, req.cfg, on_step)
    finally:
        for counter in counters:
            counter.close()
    if options.cache == "mag_calibrate" and calibration.runs and mag_ratios_file is not None:
        speed.save_mag_ratios(Path(mag_ratios_file), calibration.ratios(), req.steps)
    sigmas = _Sigmas(stepper.sigmas)   # formatted only when the line is logged
    log.info("sampled %d steps (%s, sigmas %s) at %dx%d with %d DiT evaluations", stepper.steps,
             req.sampler, sigmas, width, height, sum(c.count for c in counters))
    return latents


class _Sigmas:
    def __init__(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas

    def __str__(self) -> str:
        return ", ".join(f"{float(x):.4g}" for x in self.sigmas)
