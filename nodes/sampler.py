"""WanVolumeSampler: image + prompt -> video frames (ComfyUI IMAGE batch), tiled VAE decode."""
from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from . import expert_swap, memory_plan, run_record, validation
from .common import CATEGORY, PipeHandle, Progress, WanPipe
from ..wan_engine.load import assemble
from ..wan_engine.lora import apply as lora
from ..wan_engine.lora import experts as lora_experts
from ..wan_engine.sample import experts, phases, sampling, schedules
from ..wan_engine.sample.decode import TileSettings, tiles_for
from ..wan_engine.sample.speed import SpeedSettings
from .speed_node import WanSpeed, mag_ratios_file

log = logging.getLogger(__name__)
PROMPT_HINT = ("Describe the two people and the motion; end with the LoRA's trigger phrase, e.g. "
               "'... then they engage in k144ing kissing.'")


def _request(prompt, negative_prompt, width, height, frames, steps, cfg, shift, seed, tiled_decode,
             tile_size, tile_overlap, sampler, schedule, fit, boundary=0.0,
             cfg_low_noise=0.0) -> sampling.SampleRequest:
    return sampling.SampleRequest(prompt=prompt, negative_prompt=negative_prompt, width=width,
                                  height=height, frames=frames, steps=steps, cfg=cfg, shift=shift,
                                  seed=seed, tiles=TileSettings(tiled_decode, tile_size, tile_overlap),
                                  sampler=sampler, schedule=schedule, fit=fit,
                                  boundary=unset(boundary), cfg_low=unset(cfg_low_noise))


def unset(value):
    """The Wan2.2 inputs' 0 means "not set" (the set's default; nothing on a Wan2.1 set)."""
    return None if value == 0 and not isinstance(value, bool) else value


def _settings(pipe: PipeHandle, req: sampling.SampleRequest, speed: SpeedSettings) -> dict:
    """The settings that drive a video's cost, for the run report."""
    return {"model_set": pipe.set_name, **({"model_set_asked": pipe.asked} if pipe.asked else {}),
            "width": req.width, "height": req.height, "frames": req.frames,
            "steps": req.steps, "cfg": req.cfg, "shift": req.shift, "sampler": req.sampler,
            "schedule": req.schedule, "fit": req.fit, "tiled_decode": req.tiles.enabled,
            "tile_size": req.tiles.tile_size, "tile_overlap": req.tiles.overlap,
            "precision": pipe.precision, "offload": pipe.offload, "fp8_storage": pipe.fp8_storage,
            "loras": [{"name": Path(u.path).name, "strength": u.strength, "fuse": u.fuse,
                       **({"expert": u.expert} if pipe.model_set.two_experts else {})} for u in pipe.loras],
            "attention": speed.attention, "compile": speed.compile, "cache": speed.cache,
            "cache_threshold": speed.cache_threshold, "fp8_matmul": speed.fp8_matmul,
            **({"boundary": experts.schedule_for(req).boundary, "cfg_low_noise": experts.schedule_for(req).cfg_low}
               if pipe.model_set.two_experts else {})}


def _help(table: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in table.items())


class WanVolumeSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = sampling.SampleRequest(prompt="")
        return io.Schema(
            node_id="WanVolumeSampler",
            display_name="Wan2.1 I2V Sampler (volume)",
            category=CATEGORY,
            description=("Turns the start image into a video with the loaded Wan2.1 I2V model and its "
                         "LoRAs, then decodes with a tiled VAE. Outputs the frames as an IMAGE batch."),
            inputs=[
                WanPipe.Input("pipe", tooltip="From the loader or a LoRA node."),
                io.Image.Input("image", tooltip="The start frame: a photo of two people, fitted to "
                                                "width x height as `fit` says."),
                io.String.Input("prompt", multiline=True, default="", tooltip=PROMPT_HINT),
                io.String.Input("negative_prompt", multiline=True, default=d.negative_prompt,
                                tooltip="What to avoid; Wan's usual negative prompt by default."),
                io.Int.Input("width", default=d.width, min=16, max=sampling.MAX_SIDE, step=16,
                             tooltip="Multiple of 16. 720P: 1280x720; 480P: 832x480."),
                io.Int.Input("height", default=d.height, min=16, max=sampling.MAX_SIDE, step=16,
                             tooltip="Multiple of 16."),
                io.Int.Input("frames", default=d.frames, min=1, max=sampling.MAX_FRAMES, step=4,
                             tooltip="4k+1 frames (81 = 5 s at 16 fps)."),
                io.Int.Input("steps", default=d.steps, min=1, max=200,
                             tooltip="Denoising steps; Wan's default is 40."),
                io.Float.Input("cfg", default=d.cfg, min=1.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance; 5.0 Wan default, 6.0 kissing LoRA card, "
                                       "1.0 disables it (twice as fast)."),
                io.Float.Input("shift", default=d.shift, min=0.1, max=20.0, step=0.1,
                               tooltip="Flow shift of the scheduler: 5.0 for 720P, 3.0 for 480P."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Same seed, same inputs: same video."),
                io.Boolean.Input("tiled_decode", default=True,
                                 tooltip="Decode the video in overlapping tiles to bound VRAM (left at the "
                                         "defaults on a GPU, the memory plan's tile is used); off decodes "
                                         "whole frames (faster when memory allows)."),
                io.Int.Input("tile_size", default=d.tiles.tile_size, min=64, max=2048, step=16,
                             tooltip="Tile side in pixels (multiple of 16)."),
                io.Int.Input("tile_overlap", default=d.tiles.overlap, min=0, max=1024, step=8,
                             tooltip="Overlap between tiles in pixels (multiple of 8, at most half of "
                                     "tile_size); blended to hide seams."),
                io.Combo.Input("sampler", options=list(schedules.SAMPLERS), default=d.sampler,
                               optional=True, tooltip=_help(schedules.SAMPLER_HELP)),
                io.Combo.Input("schedule", options=list(schedules.SCHEDULES), default=d.schedule,
                               optional=True, tooltip=_help(schedules.SCHEDULE_HELP)),
                io.Combo.Input("fit", options=list(sampling.FITS), default=d.fit, optional=True,
                               tooltip=_help(sampling.FIT_HELP)),
                io.Float.Input("boundary", default=0.0, min=0.0, max=1.0, step=0.001, optional=True,
                               tooltip="Wan2.2 sets only (two experts): the high-noise expert runs while "
                                       "the timestep t >= boundary x 1000, the low-noise expert after. 0: "
                                       f"Wan's {experts.WAN22_BOUNDARY}. Must stay 0 on a Wan2.1 set."),
                io.Float.Input("cfg_low_noise", default=0.0, min=0.0, max=20.0, step=0.1, optional=True,
                               tooltip="Wan2.2 sets only: the low-noise expert's guidance (`cfg` is the "
                                       "high-noise expert's); 0: the same as cfg. Wan's I2V config: 3.5 "
                                       "for both; Lightning LoRAs: 1.0 for both. Must stay 0 on a Wan2.1 set."),
                WanSpeed.Input("speed", optional=True,
                               tooltip="Optional speed options from 'Wan Speed Settings (volume)': "
                                       "attention backend, compile, step cache. Unconnected: the "
                                       "pipeline's reference path (native SDPA attention, no "
                                       "compile, no cache), whatever is installed."),
            ],
            outputs=[io.Image.Output("video_frames", display_name="frames",
                                     tooltip="The video frames, for any video node.")],
        )

    @classmethod
    def validate_inputs(cls, input_types: dict | None = None, **values) -> bool:
        """Every input against its declared rule, then the engine's rules (nodes/validation.py)."""
        known = validation.given_values(cls, values, input_types)
        validation.check_schema(cls, known)
        defaults = {i.id: getattr(i, "default", None) for i in cls.define_schema().inputs}
        merged = defaults | {"prompt": "(linked)"} | known
        params = inspect.signature(_request).parameters
        sampling.check_request(_request(**{k: merged[k] for k in params if k in merged}))
        return True

    @classmethod
    @validation.checked
    def execute(cls, pipe: PipeHandle, image: torch.Tensor, prompt, negative_prompt, width, height,
                frames, steps, cfg, shift, seed, tiled_decode, tile_size, tile_overlap,
                sampler: str = "unipc", schedule: str = "auto", fit: str = "crop",
                speed: SpeedSettings | None = None, boundary: float = 0.0,
                cfg_low_noise: float = 0.0) -> io.NodeOutput:
        req = _request(prompt, negative_prompt, width, height, frames, steps, cfg, shift, seed,
                       tiled_decode, tile_size, tile_overlap, sampler, schedule, fit, boundary, cfg_low_noise)
        sampling.check_request(req)
        experts.check_family(pipe.model_set.two_experts, req.boundary, req.cfg_low, pipe.set_name)
        record = run_record.current()
        record.settings |= _settings(pipe, req, speed or SpeedSettings())
        before = assemble.resident()
        with record.phase("load"):   # reuse (or reload) the set and make room on the GPU
            loaded = pipe.load(room_for=(req.width, req.height, req.frames))
        req = _plan_tiles(req, loaded)
        record.use_device(loaded.device)
        record.note_load(read_volume=loaded is not before)
        record.note_plan(loaded)
        start = Image.fromarray((image[0].cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8))
        bar = Progress(req.steps)
        previewer = _previewer(loaded.device)

        def on_step(step: int, total: int, x0: torch.Tensor) -> None:
            record.step_done()
            bar.update(step, total, _preview(previewer, x0))

        def on_decode(done: int, total: int) -> None:
            bar.update(done, total)

        with loaded.lock:   # no other prompt may change the adapters between activate and sample
            with record.phase("lora"):
                if loaded.model_set.two_experts:
                    lora_experts.activate(loaded, pipe.loras)     # each expert its own files
                else:
                    lora.activate(loaded, pipe.loras)
            log.info("LoRAs for this run: %s", ", ".join(f"{Path(u.path).name} x {u.strength:g}"
                                                         for u in pipe.loras) or "none")
            video = sampling.sample(loaded, start, req, on_step=on_step, on_decode=on_decode,
                                    options=speed or SpeedSettings(),
                                    mag_ratios_file=mag_ratios_file(pipe.set_name),
                                    # the report's hook outermost: it times what the memory hook does
                                    phase=phases.compose(record.phase, memory_plan.phase_hook(loaded),
                                                         expert_swap.phase_hook(loaded)))
        return io.NodeOutput(torch.from_numpy(video))


def _plan_tiles(req: sampling.SampleRequest, loaded) -> sampling.SampleRequest:
    """The memory plan's decode tile on a GPU unless the tile inputs were changed from their
    defaults (the user's tiles win)."""
    plan = getattr(loaded, "plan", None)
    if plan is None or loaded.device.type != "cuda":
        return req
    req = dataclasses.replace(req, encode_tile=plan.encode_tile)   # 0 unless untiled does not fit
    return req if req.tiles != TileSettings() else dataclasses.replace(req, tiles=tiles_for(plan.decode_tile))


def _previewer(device: torch.device):
    """ComfyUI's previewer for Wan 2.1 latents, following --preview-method (None when off)."""
    import comfy.latent_formats
    import latent_preview

    return latent_preview.get_previewer(device, comfy.latent_formats.Wan21())


def _preview(previewer, x0: torch.Tensor):
    """The middle frame of the step's denoised estimate, as ComfyUI's own samplers preview."""
    if previewer is None:
        return None
    mid = x0.shape[2] // 2
    return previewer.decode_latent_to_preview_image("JPEG", x0[:, :, mid:mid + 1].float())
