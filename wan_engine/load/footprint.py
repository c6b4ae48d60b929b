"""How much memory sampling needs besides the weights: an estimate, to ask for room first.

The DiT's activations scale with the latent tokens (frames/4 x height/16 x width/16 for Wan's
8x VAE and 1x2x2 patches) times its hidden width. ``ACTIVATION_FACTOR`` covers what is alive at
once inside one block (hidden states and residual, q/k/v and the attention output, the feed-forward
expansion of ~2.7x, norms and the timestep modulation). It is an estimate, deliberately on the
high side; the memory manager uses it only to decide how much to evict before sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

ACTIVATION_FACTOR = 12
VAE_SPATIAL = 8
VAE_TEMPORAL = 4
PATCH = (1, 2, 2)
WAN14B_HIDDEN = 40 * 128   # heads x head dim of Wan2.1-I2V-14B


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
                       dtype_bytes: int = 2) -> Footprint:
    """Estimated working memory of one DiT evaluation (not counting the weights)."""
    tokens = latent_tokens(width, height, frames)
    return Footprint(tokens, hidden, dtype_bytes, tokens * hidden * dtype_bytes * ACTIVATION_FACTOR)


def transformer_hidden(transformer) -> int:
    """The hidden width of a diffusers WanTransformer3DModel (heads x head dim)."""
    cfg = transformer.config
    return int(cfg.num_attention_heads) * int(cfg.attention_head_dim)
