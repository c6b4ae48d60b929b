"""How much memory each phase needs besides the weights: estimates, to plan and to ask for room.

The DiT's activations scale with the latent tokens (frames/4 x height/16 x width/16 for Wan's
8x VAE and 1x2x2 patches) times its hidden width. ``ACTIVATION_FACTOR`` covers what is alive at
once inside one block (hidden states and residual, q/k/v and the attention output, the feed-forward
expansion of ~2.7x, norms and the timestep modulation). Attention backends that keep the whole
score matrix (the math kernel PyTorch falls back to on the CPU) add heads x tokens^2 on top; the
fused kernels (flash, cuDNN, memory-efficient, sage) stay linear in the tokens.

The VAE works on full-resolution pixels: ``VAE_BYTES_PER_PIXEL`` is what its widest stage keeps
alive per output pixel of one decoder call (96 channels x 4 frames x fp32 x ~6 live copies).
Decoder calls are one latent frame (4 video frames) each, so the frame count changes how many
calls run, not the peak; tiling bounds the pixels of a call.
"""
from __future__ import annotations

from dataclasses import dataclass

ACTIVATION_FACTOR = 12
VAE_SPATIAL = 8
VAE_TEMPORAL = 4
PATCH = (1, 2, 2)
WAN14B_HIDDEN = 40 * 128   # heads x head dim of Wan2.1-I2V-14B
WAN14B_HEADS = 40
TEXT_TOKENS = 512          # Wan's prompt length: the umT5 works on two prompts of 512 tokens
VAE_BYTES_PER_PIXEL = 96 * 4 * 4 * 6
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
    total = tokens * hidden * dtype_bytes * copies
    if attention in QUADRATIC_ATTENTION:
        total += heads * tokens * tokens * dtype_bytes
    return Footprint(tokens, hidden, dtype_bytes, total)


def video_bytes(width: int, height: int, frames: int) -> int:
    """The start-frame video (fp32 RGB) and its latents that the VAE encode holds on the device."""
    pixels = 3 * frames * width * height * 4
    latents = 2 * 16 * ((frames - 1) // VAE_TEMPORAL + 1) * (height // 8) * (width // 8) * 4
    return pixels + latents


def vae_call_bytes(tile_w: int, tile_h: int) -> int:
    """Working memory of one VAE encoder/decoder call over a ``tile_w`` x ``tile_h`` region."""
    return tile_w * tile_h * VAE_BYTES_PER_PIXEL


def transformer_hidden(transformer) -> int:
    """The hidden width of a diffusers WanTransformer3DModel (heads x head dim)."""
    cfg = transformer.config
    return int(cfg.num_attention_heads) * int(cfg.attention_head_dim)
