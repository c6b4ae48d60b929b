"""VAE decode of Wan latents, tiled to bound memory, with progress per decoder call.

On an out-of-memory error the decode is retried with half the tile size (down to ``MIN_TILE``),
then once more with the VAE on the CPU, before it fails with a message saying what to lower.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..errors import WanVolumeError
from ..load import compat

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


# The VAE attributes enable_tiling/disable_tiling set. diffusers' Wan VAE also honours them when it
# ENCODES the start image, so a decode must leave them as it found them (see ``tiling``).
TILING_ATTRS = ("use_tiling", "tile_sample_min_height", "tile_sample_min_width",
                "tile_sample_stride_height", "tile_sample_stride_width")


@contextlib.contextmanager
def tiling(vae, tiles: TileSettings) -> Iterator[None]:
    """The VAE tiled as ``tiles`` says inside the block, exactly as before it afterwards.

    Without the restore the next prompt's start image would be encoded tiled (the first prompt
    after a load encodes it whole), and the same inputs would give a different video."""
    saved = {name: getattr(vae, name) for name in TILING_ATTRS}
    try:
        configure_tiling(vae, tiles)
        yield
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


def configure_tiling(vae, tiles: TileSettings) -> None:
    """Set the VAE's tiling for ``tiles``; prefer ``tiling`` (it restores the previous state)."""
    if tiles.enabled:
        stride = tiles.tile_size - tiles.overlap
        vae.enable_tiling(tile_sample_min_height=tiles.tile_size, tile_sample_min_width=tiles.tile_size,
                          tile_sample_stride_height=stride, tile_sample_stride_width=stride)
    else:
        vae.disable_tiling()


MIN_TILE = 64


def tiles_for(tile: int) -> TileSettings:
    """The memory plan's decode tile (pixels; 0 is whole frames) as tile settings."""
    if not tile:
        return TileSettings(enabled=False)
    return TileSettings(True, tile, max(8, tile // 4 // 8 * 8))


def smaller_tiles(tiles: TileSettings) -> TileSettings | None:
    """Half the tile (overlap kept a multiple of 8 and a quarter of the tile); None below MIN_TILE."""
    if not tiles.enabled:
        return TileSettings(True, 256, 64)
    size = tiles.tile_size // 2 // 16 * 16
    if size < MIN_TILE:
        return None
    return TileSettings(True, size, min(tiles.overlap, size // 4 // 8 * 8))


def decode(vae, latents: torch.Tensor, tiles: TileSettings,
           on_progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Normalised Wan latents [B,16,T,h,w] -> video [B,3,F,H,W] in [-1, 1] (float32, CPU).

    Retries with smaller tiles on ``torch.OutOfMemoryError``, then on the CPU (see module doc).
    """
    device = compat.module_execution_device(vae)   # right under CPU offload hooks too
    attempt: TileSettings | None = tiles
    while attempt is not None:
        try:
            return decode_once(vae, latents, attempt, device, on_progress)
        except torch.OutOfMemoryError:
            _free_cache()
            following = smaller_tiles(attempt)
            log.warning("VAE decode ran out of memory with %s; retrying with %s", _describe(attempt),
                        _describe(following) if following else "the VAE on the CPU")
            attempt = following
    if device.type != "cpu":
        return _decode_on_cpu(vae, latents, TileSettings(True, MIN_TILE * 2, 32), device, on_progress)
    raise _out_of_memory(tiles)


def _decode_on_cpu(vae, latents, tiles, device, on_progress) -> torch.Tensor:
    home = next(vae.parameters()).device   # the CPU already under offload hooks
    try:
        vae.to("cpu")
        _free_cache()
        return decode_once(vae, latents, tiles, torch.device("cpu"), on_progress)
    except torch.OutOfMemoryError:
        raise _out_of_memory(tiles) from None
    finally:
        vae.to(home)


def _out_of_memory(tiles: TileSettings) -> WanVolumeError:
    return WanVolumeError(
        f"the VAE decode ran out of memory even with {MIN_TILE} px tiles and on the CPU",
        field="tile_size", value=tiles.tile_size,
        fix="lower width/height or frames, or free memory (close other GPU jobs; loader offload=model)")


def _describe(tiles: TileSettings) -> str:
    return f"{tiles.tile_size} px tiles" if tiles.enabled else "whole frames"


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def decode_once(vae, latents: torch.Tensor, tiles: TileSettings, device: torch.device,
                on_progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """One decode attempt with ``tiles`` on ``device``."""
    cfg = vae.config
    latents = latents.to(device=device, dtype=vae.dtype)
    mean = torch.tensor(cfg.latents_mean, device=device, dtype=vae.dtype).view(1, cfg.z_dim, 1, 1, 1)
    std = torch.tensor(cfg.latents_std, device=device, dtype=vae.dtype).view(1, cfg.z_dim, 1, 1, 1)
    latents = latents * std + mean
    total = decoder_calls(vae, latents, tiles)
    done = [0]

    def hook(*_):
        done[0] += 1
        if on_progress is not None:
            on_progress(min(done[0], total), total)

    handle = vae.decoder.register_forward_hook(hook)
    try:
        with tiling(vae, tiles), torch.inference_mode():
            video = vae.decode(latents, return_dict=False)[0]
    finally:
        handle.remove()
    return video.float().cpu()
