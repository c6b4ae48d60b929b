"""WanVolumeSampler: image + prompt -> video frames (ComfyUI IMAGE batch), tiled VAE decode."""
from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from .common import CATEGORY, PipeHandle, Progress, WanPipe
from .engine import lora, sampling
from .engine.decode import TileSettings
from .engine.errors import WanVolumeError

PROMPT_HINT = ("Describe the two people and the motion; end with the LoRA's trigger phrase, e.g. "
               "'... then they engage in k144ing kissing.'")


def _request(prompt, negative_prompt, width, height, frames, steps, cfg, shift, seed,
             tiled_decode, tile_size, tile_overlap) -> sampling.SampleRequest:
    return sampling.SampleRequest(prompt=prompt, negative_prompt=negative_prompt, width=width,
                                  height=height, frames=frames, steps=steps, cfg=cfg, shift=shift,
                                  seed=seed, tiles=TileSettings(tiled_decode, tile_size, tile_overlap))


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
                io.Image.Input("image", tooltip="The start frame: a photo of two people. It is resized "
                                                "to cover width x height and centre-cropped."),
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
                                 tooltip="Decode the video in overlapping tiles to bound VRAM; off decodes "
                                         "whole frames (faster when memory allows)."),
                io.Int.Input("tile_size", default=d.tiles.tile_size, min=64, max=2048, step=16,
                             tooltip="Tile side in pixels (multiple of 16)."),
                io.Int.Input("tile_overlap", default=d.tiles.overlap, min=0, max=1024, step=8,
                             tooltip="Overlap between tiles in pixels (multiple of 8, below tile_size); "
                                     "blended to hide seams."),
            ],
            outputs=[io.Image.Output("video_frames", display_name="frames",
                                     tooltip="The video frames, for any video node.")],
        )

    @classmethod
    def validate_inputs(cls, width: int, height: int, frames: int) -> bool | str:
        """The rules ComfyUI's min/max cannot express, checked before anything runs (HTTP 400).

        ComfyUI reports the message once per argument here, so only these three are taken; the
        rest is range-checked by ComfyUI and fully checked again in ``execute``."""
        if None in (width, height, frames):
            return True   # linked from another node: checked in execute
        try:
            sampling.check_request(sampling.SampleRequest(prompt="-", width=width, height=height,
                                                          frames=frames))
        except WanVolumeError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, pipe: PipeHandle, image: torch.Tensor, prompt, negative_prompt, width, height,
                frames, steps, cfg, shift, seed, tiled_decode, tile_size, tile_overlap) -> io.NodeOutput:
        req = _request(prompt, negative_prompt, width, height, frames, steps, cfg, shift, seed,
                       tiled_decode, tile_size, tile_overlap)
        sampling.check_request(req)
        loaded = pipe.load(room_for=(req.width, req.height, req.frames))
        lora.activate(loaded, pipe.loras)
        start = Image.fromarray((image[0].cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8))
        bar = Progress(req.steps)
        previewer = _previewer(loaded.device)

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            bar.update(step, total, _preview(previewer, latents))

        def on_decode(done: int, total: int) -> None:
            bar.update(done, total)

        video = sampling.sample(loaded, start, req, on_step=on_step, on_decode=on_decode)
        return io.NodeOutput(torch.from_numpy(video))


def _previewer(device: torch.device):
    """ComfyUI's previewer for Wan 2.1 latents, following --preview-method (None when off)."""
    import comfy.latent_formats
    import latent_preview

    return latent_preview.get_previewer(device, comfy.latent_formats.Wan21())


def _preview(previewer, latents: torch.Tensor):
    if previewer is None:
        return None
    mid = latents.shape[2] // 2
    return previewer.decode_latent_to_preview_image("JPEG", latents[:, :, mid:mid + 1].float())
