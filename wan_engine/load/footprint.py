"""How much memory each phase needs besides the weights: estimates, to plan and to ask for room.

The DiT's activations scale with the latent tokens (frames/4 x height/16 x width/16 for Wan's
8x VAE and 1x2x2 patches) times its hidden width. ``ACTIVATION_FACTOR`` is how many hidden-sized
bf16 copies of the tokens are alive at the peak of one DiT evaluation. Attention backends that
keep the whole score matrix (the math kernel PyTorch falls back to on the CPU) add heads x
tokens^2 on top; the fused kernels (flash, cuDNN, memory-efficient, sage) stay linear in tokens.

The VAE works on full-resolution pixels, one latent frame (4 video frames) per call:
``VAE_DECODE_BYTES_PER_PIXEL``/``VAE_ENCODE_BYTES_PER_PIXEL`` are what one call keeps alive per
pixel of its region (whole frames, or the plan's tile), beside the video itself.

Measured, not guessed: every constant here comes from the pack's own pipeline at full size on a
simulated card (wan_engine/simulate; ``bench/calibrate_simulation.py``), set a few per cent above
the largest measured value so the plan's estimate is never below the simulated peak. What the
simulation cannot see (the CUDA context, cuBLAS/attention workspaces, the allocator's
fragmentation) is kept outside these figures: plan.CUDA_CONTEXT and plan.SAFETY.
"""
from __future__ import annotations

from dataclasses import dataclass

ACTIVATION_FACTOR = 11.7       # measured 11.29 at 832x480x81 (bf16 and fp8 DiT), 11.24 at 1280x720x81
VAE_SPATIAL = 8
VAE_TEMPORAL = 4
PATCH = (1, 2, 2)
WAN14B_HIDDEN = 40 * 128   # heads x head dim of Wan2.1-I2V-14B
WAN14B_HEADS = 40
TEXT_TOKENS = 512          # Wan's prompt length: the umT5 works on two prompts of 512 tokens
TEXT_COPIES = 18           # measured ~15.4 (0.12 GiB of working memory in the text phase, 480p, 16 GB plan)
VAE_DECODE_BYTES_PER_PIXEL = 19_900   # measured 19,478 (whole 832x480), 18,806 (480p, 512 px), 18,912 (720p, 512 px)
SMALL_TILE = 256                      # tiles this small keep more per pixel (blending): 21,749 measured
SMALL_TILE_EXTRA = 2_000
VAE_ENCODE_BYTES_PER_PIXEL = 14_600   # measured 14,170 (832x480), 14,140 (1280x720), untiled
# kernels that hold the heads x tokens x tokens score matrix; every other one is linear in tokens
QUADRATIC_ATTENTION = ("math",)
# sage quantises q and k to int8 and keeps scales: about one more hidden-sized tensor alive
EXTRA_COPIES = {"sage": 1}


@dataclass(frozen=True)
class Footprint:
    """The estimate and what it was made of (for the log)."""

    tokens: int
    hidden: int
    dtype_bytes: int
    bytes: int

    def __str__(self) -> str:
        return (f"{self.bytes / 2**30:.2f} GiB ({self.tokens} latent tokens x {self.hidden} hidden x "
                f"{self.dtype_bytes} bytes x {ACTIVATION_FACTOR})")


def latent_tokens(width: int, height: int, frames: int) -> int:
    """Tokens the DiT attends over for a video of ``frames`` x ``height`` x ``width``."""
    t = (frames - 1) // VAE_TEMPORAL + 1
    h = height // VAE_SPATIAL // PATCH[1]
    w = width // VAE_SPATIAL // PATCH[2]
    return max(1, t // PATCH[0]) * max(1, h) * max(1, w)


def sampling_footprint(width: int, height: int, frames: int, hidden: int = WAN14B_HIDDEN,
                       dtype_bytes: int = 2, attention: str = "native",
                       heads: int = WAN14B_HEADS) -> Footprint:
    """Estimated working memory of one DiT evaluation (not counting the weights)."""
    tokens = latent_tokens(width, height, frames)
    copies = ACTIVATION_FACTOR + EXTRA_COPIES.get(attention, 0)
    total = int(tokens * hidden * dtype_bytes * copies)
    if attention in QUADRATIC_ATTENTION:
        total += heads * tokens * tokens * dtype_bytes
    return Footprint(tokens, hidden, dtype_bytes, total)


def video_bytes(width: int, height: int, frames: int) -> int:
    """The start-frame video (fp32 RGB) and its latents that the VAE encode holds on the device."""
    pixels = 3 * frames * width * height * 4
    latents = 2 * 16 * ((frames - 1) // VAE_TEMPORAL + 1) * (height // 8) * (width // 8) * 4
    return pixels + latents


def text_bytes(dtype_bytes: int = 2) -> int:
    """Working memory of the umT5 over two prompts of 512 tokens: 0.12 GiB measured in bf16
    (TEXT_COPIES hidden-sized copies of its 4096-wide activations)."""
    return 2 * TEXT_TOKENS * 4096 * TEXT_COPIES * dtype_bytes


def vae_call_bytes(tile_w: int, tile_h: int, encode: bool = False) -> int:
    """Working memory of one VAE decoder (or encoder) call over a ``tile_w`` x ``tile_h`` region."""
    if encode:
        return tile_w * tile_h * VAE_ENCODE_BYTES_PER_PIXEL
    small = SMALL_TILE_EXTRA if max(tile_w, tile_h) <= SMALL_TILE else 0
    return tile_w * tile_h * (VAE_DECODE_BYTES_PER_PIXEL + small)


def transformer_hidden(transformer) -> int:
    """The hidden width of a diffusers WanTransformer3DModel (heads x head dim)."""
    cfg = transformer.config
    return int(cfg.num_attention_heads) * int(cfg.attention_head_dim)
