"""The one set of input rules, shared by the engine, the CLI and the nodes' ``validate_inputs``.

Every check raises ``InvalidInput`` naming the field, the value, the rule and a fix; the values a
fix proposes are in ``InvalidInput.suggested`` and pass the same rule (tests feed them back in).
No ComfyUI imports: the nodes translate their schema into these calls.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from .errors import InvalidInput

MAX_SIDE = 2048
MAX_FRAMES = 257
MAX_SEED = 0xFFFFFFFFFFFFFFFF
# Bytes per path component on ext4, xfs, btrfs, tmpfs and overlayfs (os.pathconf PC_NAME_MAX).
NAME_MAX = 255
PATH_MAX = 4096
# What Video Combine adds to the prefix's last component: "_000001_" + ".webm" + ".part" (and a spare byte).
NAME_RESERVE = 24
SIZE_HINT = "720P: 1280x720, 480P: 832x480"


def _clamp(v: float, lo: float | None, hi: float | None) -> float:
    if lo is not None and v < lo:
        return lo
    if hi is not None and v > hi:
        return hi
    return v


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}"
    if lo is not None:
        return f"at least {lo}"
    return f"at most {hi}" if hi is not None else "any value"


def number(field: str, value: object, *, lo: float | None = None, hi: float | None = None,
           integer: bool = False, example: float | None = None, context: str = "",
           nearest: Callable[[float], tuple] | None = None) -> float:
    """A finite int (``integer``) or float within [lo, hi]; returns it.

    ``nearest(v)`` turns an in-range number into the valid values next to it (for rules such as
    "a multiple of 16" on top of the range), so every suggested fix passes the whole rule."""
    kind = "a whole number" if integer else "a number"
    rule = f"must be {kind} {_range_text(lo, hi)}{context}"
    fallback = _clamp(example if example is not None else (lo if lo is not None else 0), lo, hi)
    fallback = int(fallback) if integer else fallback
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{rule}, got {type(value).__name__}", field=field, value=value,
                           fix=f"use {fallback}", suggested=(fallback,))
    if isinstance(value, float) and not math.isfinite(value):   # an int is finite (10**400 too)
        raise InvalidInput(f"{rule}; NaN and infinity are not numbers", field=field, value=value,
                           fix=f"use {fallback}", suggested=(fallback,))
    off_grid = integer and value != int(value)
    if off_grid or (lo is not None and value < lo) or (hi is not None and value > hi):
        near = _clamp(round(value) if integer else value, lo, hi)
        near = nearest(near) if nearest else (int(near) if integer else near,)
        raise InvalidInput(rule, field=field, value=value, fix=f"use {' or '.join(map(str, near))}",
                           suggested=near)
    return int(value) if integer else value


def choice(field: str, value: object, options: Sequence) -> object:
    """One of ``options`` (exact match, no type conversion)."""
    if not any(value == o and type(value) is type(o) for o in options):
        shown = ", ".join(repr(o) for o in options[:12])
        more = f" and {len(options) - 12} more" if len(options) > 12 else ""
        raise InvalidInput(f"is not one of the choices: {shown}{more}", field=field, value=value,
                           fix=f"use {options[0]!r}" if options else "see the node's list",
                           suggested=tuple(options[:1]))
    return value


def text(field: str, value: object, *, blank_ok: bool = True, fix: str = "") -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"must be text, got {type(value).__name__}", field=field, value=value,
                           fix=fix or "give a string")
    if not blank_ok and not value.strip():
        raise InvalidInput("is empty", field=field, value=value, fix=fix or "give some text")
    return value


def flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"must be true or false, got {type(value).__name__}", field=field,
                           value=value, fix="use true or false", suggested=(True, False))
    return value


def multiple(field: str, value: object, step: int, lo: int, hi: int, hint: str = "",
             example: int | None = None) -> int:
    """A whole number in [lo, hi] that is a multiple of ``step``; the fix names the nearest ones."""
    first, last = -(-lo // step) * step, hi // step * step

    def nearest(v: float) -> tuple[int, ...]:
        return tuple(sorted({min(max(int(v) // step * step, first), last),
                             min(max(-(-int(v) // step) * step, first), last)}))

    extra = f" ({hint})" if hint else ""
    value = number(field, value, lo=lo, hi=hi, integer=True, example=example,
                   context=f", a multiple of {step}{extra}", nearest=nearest)
    if value % step:
        near = nearest(value)
        raise InvalidInput(f"must be a multiple of {step} from {lo} to {hi}", field=field, value=value,
                           fix=f"use {' or '.join(map(str, near))}{extra}", suggested=near)
    return value


def side(field: str, value: object) -> int:
    """Width or height of the video: a multiple of 16 up to ``MAX_SIDE``."""
    return multiple(field, value, 16, 16, MAX_SIDE, SIZE_HINT, example=832 if field == "width" else 480)


def frame_count(value: object) -> int:
    """4k+1 frames (Wan's VAE packs 4 frames per latent after the first), at most ``MAX_FRAMES``."""
    top = (MAX_FRAMES - 1) // 4 * 4 + 1

    def nearest(v: float) -> tuple[int, ...]:
        below = (int(v) - 1) // 4 * 4 + 1
        return tuple(n for n in (below, below + 4) if 1 <= n <= top) if (int(v) - 1) % 4 else (int(v),)

    value = number("frames", value, lo=1, hi=top, integer=True, example=81,
                   context=", of the form 4k+1 (1, 5, 9, ... 81 ...)", nearest=nearest)
    if (value - 1) % 4:
        near = nearest(value)
        raise InvalidInput(f"must be 4k+1 (1, 5, 9, ... 81 ...) and at most {top}", field="frames",
                           value=value, fix=f"use {' or '.join(map(str, near))}", suggested=near)
    return value


def tiles(enabled: object, tile_size: object, overlap: object) -> None:
    """Tiled VAE decode: tile side a multiple of 16 (>= 64), overlap a multiple of 8 of at most
    half the tile, so tiles advance by at least half a tile (a larger overlap multiplies the
    decoder calls: tile_size - 8 would decode each pixel about (tile_size / 8)^2 times)."""
    if not flag("tiled_decode", enabled):
        return
    size = multiple("tile_size", tile_size, 16, 64, MAX_SIDE, example=256)
    multiple("tile_overlap", overlap, 8, 0, size // 2 // 8 * 8,
             hint=f"at most half of tile_size {size}", example=min(64, size // 4 // 8 * 8))


DISTILL_SCHEDULES = ("distill_4step",)


def distill_cfg(schedule: object, cfg: object) -> None:
    """A step-distilled schedule runs without classifier-free guidance: cfg must be 1.0.

    The distill LoRAs were trained with guidance folded in; cfg > 1 doubles the DiT calls and
    over-saturates the video."""
    if schedule in DISTILL_SCHEDULES and cfg != 1.0:
        raise InvalidInput(f"schedule {schedule} runs without guidance (the distill LoRA has it "
                           "built in); cfg must be 1.0", field="cfg", value=cfg,
                           fix="use 1.0 (or schedule auto to keep guidance)", suggested=(1.0,))


def sample_request(req) -> None:
    """Every rule of a ``sampling.SampleRequest`` (duck-typed: this module imports no model code)."""
    side("width", req.width)
    side("height", req.height)
    frame_count(req.frames)
    number("steps", req.steps, lo=1, integer=True, example=40)
    number("cfg", req.cfg, lo=1.0, example=5.0,
           context=" (1.0 switches classifier-free guidance off; Wan default 5.0)")
    number("shift", req.shift, lo=0.1, example=5.0, context=" (5.0 for 720P, 3.0 for 480P)")
    number("seed", req.seed, lo=0, hi=MAX_SEED, integer=True, example=0)
    text("prompt", req.prompt, blank_ok=False,
         fix="describe the video, ending with the LoRA's trigger phrase")
    text("negative_prompt", req.negative_prompt)
    t = req.tiles
    tiles(t.enabled, t.tile_size, t.overlap)


def filename_prefix(value: object, field: str = "filename_prefix") -> str:
    """A relative path inside the output folder: no '..', no absolute path, no control characters,
    each component short enough for the file system (``NAME_MAX`` bytes) once the counter and
    extension are added. ComfyUI's %year%-style tokens only get shorter when substituted."""
    fix = "use a relative name such as 'WanVolume/kiss'"
    value = text(field, value, blank_ok=False, fix=fix)
    bad = sorted({f"U+{ord(c):04X}" for c in value if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise InvalidInput(f"contains control characters ({', '.join(bad)})", field=field, value=value, fix=fix)
    if value.startswith(("/", "\\", "~")) or (len(value) > 1 and value[1] == ":"):
        raise InvalidInput("must be relative to ComfyUI's output folder", field=field, value=value, fix=fix)
    parts = [p for p in value.replace("\\", "/").split("/") if p]
    if ".." in parts or not parts or parts[-1] == ".":
        raise InvalidInput("must stay inside ComfyUI's output folder ('..' is not allowed)",
                           field=field, value=value, fix=fix)
    for i, part in enumerate(parts):
        limit = NAME_MAX - (NAME_RESERVE if i == len(parts) - 1 else 0)
        if len(part.encode("utf-8")) > limit:
            raise InvalidInput(f"the part '{part[:40]}...' is {len(part.encode())} bytes; a file name may "
                               f"have {limit} bytes here ({NAME_MAX} minus the counter and extension)",
                               field=field, value=value, fix=fix)
    if len(value.encode("utf-8")) > PATH_MAX // 2:
        raise InvalidInput(f"is longer than {PATH_MAX // 2} bytes", field=field, value=value, fix=fix)
    return value
