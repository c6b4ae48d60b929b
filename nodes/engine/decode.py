"""VAE decode of Wan latents, tiled to bound memory, with progress per decoder call."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileSettings:
    """Tiled decode in pixels. ``enabled`` off decodes whole frames (more memory)."""

    enabled: bool = True
    tile_size: int = 256
    overlap: int = 64


def decoder_calls(vae, latents: torch.Tensor, tiles: TileSettings) -> int:
    """How many decoder calls diffusers' Wan VAE makes for ``latents`` (progress total)."""
    _, _, frames, h, w = latents.shape
    ratio = vae.spatial_compression_ratio
    tile_lat = tiles.tile_size // ratio
    if not tiles.enabled or (h <= tile_lat and w <= tile_lat):
        return frames
    stride = (tiles.tile_size - tiles.overlap) // ratio
    return len(range(0, h, stride)) * len(range(0, w, stride)) * frames


def configure_tiling(vae, tiles: TileSettings) -> None:
    if tiles.enabled:
        stride = tiles.tile_size - tiles.overlap
        vae.enable_tiling(tile_sample_min_height=tiles.tile_size, tile_sample_min_width=tiles.tile_size,
                          tile_sample_stride_height=stride, tile_sample_stride_width=stride)
    else:
        vae.disable_tiling()


def decode(vae, latents: torch.Tensor, tiles: TileSettings,
           on_progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Normalised Wan latents [B,16,T,h,w] -> video [B,3,F,H,W] in [-1, 1] (float32, CPU)."""
    from diffusers.utils.torch_utils import get_module_execution_device

    cfg = vae.config
    device = get_module_execution_device(vae)   # right under CPU offload hooks too
    latents = latents.to(device=device, dtype=vae.dtype)
    mean = torch.tensor(cfg.latents_mean, device=device, dtype=vae.dtype).view(1, cfg.z_dim, 1, 1, 1)
    std = torch.tensor(cfg.latents_std, device=device, dtype=vae.dtype).view(1, cfg.z_dim, 1, 1, 1)
    latents = latents * std + mean
    configure_tiling(vae, tiles)
    total = decoder_calls(vae, latents, tiles)
    done = [0]

    def hook(*_):
        done[0] += 1
        if on_progress is not None:
            on_progress(min(done[0], total), total)

    handle = vae.decoder.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            video = vae.decode(latents, return_dict=False)[0]
    finally:
        handle.remove()
    return video.float().cpu()
