"""The rows of tests/test_bad_inputs.py: bad or unusual inputs to the shipped 480p API workflow.

A row changes some inputs of one node (by class type) and says what must happen:
``refuse``: HTTP 400 whose node error names ``field`` (as "field = ..." for the pack's nodes);
``file``: the damaged file's path is named (at /prompt time or in the run's error);
``video``: a video is written, with the prompt (and workflow) embedded whole.
No row gives a BOOLEAN input a string or number: ComfyUI 0.3.75 converts it with ``bool()`` before
any ``validate_inputs`` runs (``"false"`` becomes true), so no node can refuse it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NAN, INF = math.nan, math.inf
TRIGGER = " then they engage in k144ing kissing."
BIG_PROMPT = "a" * (131_072 - len(TRIGGER)) + TRIGGER
EMOJI_PROMPT = "\U0001F48B" * 100_000 + TRIGGER
CJK_PROMPT = "两个人相视而笑" * (30_000 // 7) + TRIGGER
ESCAPE_MARK = "wanvolume-escape-check"

S, L, R, V, I, SP = ("WanVolumeSampler", "WanVolumeModelLoader", "WanVolumeLoraApply",
                     "WanVolumeVideoCombine", "LoadImage", "WanVolumeSpeedSettings")
# A row for SP adds a speed node (its defaults, then the row's inputs) linked to the sampler's `speed`.
FAST = {"sampler": "euler", "schedule": "distill_4step", "steps": 4, "cfg": 1.0}


@dataclass(frozen=True)
class Row:
    name: str
    node: str
    inputs: dict
    expect: str                       # "refuse" | "file" | "video"
    field: str = ""                   # refuse: the field named; file: a fragment of the path
    big_workflow: bool = False        # send a UI workflow over 128 KiB in extra_pnginfo


def refuse(node: str, fld: str, value, name: str = "") -> Row:
    return Row(name or f"{fld}={value!r}"[:60], node, {fld: value}, "refuse", fld)


ROWS: list[Row] = [
    # -- the sampler: types, NaN/inf, ranges, multiples --------------------------------------
    refuse(S, "width", "abc"), refuse(S, "width", 4096), refuse(S, "width", 100), refuse(S, "width", 0),
    refuse(S, "width", -16), refuse(S, "width", NAN), refuse(S, "width", INF), refuse(S, "height", 47),
    refuse(S, "height", None, "height=null"), refuse(S, "height", {"a": 1}),
    refuse(S, "frames", 0), refuse(S, "frames", 80), refuse(S, "frames", 300), refuse(S, "frames", "five"),
    refuse(S, "steps", 0), refuse(S, "steps", -INF), refuse(S, "steps", 201),
    refuse(S, "cfg", NAN), refuse(S, "cfg", INF), refuse(S, "cfg", 0.5), refuse(S, "cfg", "high"),
    refuse(S, "shift", 0.0), refuse(S, "shift", -1.0), refuse(S, "shift", NAN),
    refuse(S, "seed", -1), refuse(S, "seed", 2 ** 64), refuse(S, "width", 10 ** 400, "width=10**400"),
    refuse(S, "prompt", ""), refuse(S, "prompt", "  \n\t ", "prompt=blank"),
    refuse(S, "tile_size", 72), refuse(S, "tile_size", 32), refuse(S, "tile_overlap", 12),
    refuse(S, "tile_overlap", NAN), Row("tile_overlap=tile_size", S, {"tile_size": 64, "tile_overlap": 64},
                                        "refuse", "tile_overlap"),
    # -- the sampler's newer inputs: sampler, schedule, fit, the speed link ----------------------
    refuse(S, "sampler", "ddim"), refuse(S, "sampler", 1), refuse(S, "schedule", "turbo"),
    refuse(S, "schedule", None, "schedule=null"), refuse(S, "fit", "stretch"), refuse(S, "fit", ""),
    Row("distill_4step with unipc", S, FAST | {"sampler": "unipc"}, "refuse", "sampler"),
    Row("distill_4step with 40 steps", S, FAST | {"steps": 40}, "refuse", "steps"),
    Row("distill_4step with 2 steps", S, FAST | {"steps": 2}, "refuse", "steps"),
    Row("distill_4step with cfg 5", S, FAST | {"cfg": 5.0}, "refuse", "cfg"),
    Row("tile_overlap over half a tile", S, {"tile_size": 64, "tile_overlap": 40}, "refuse", "tile_overlap"),
    Row("speed linked to an IMAGE", S, {"speed": ["1", 0]}, "refuse", "speed"),
    # -- the speed settings node --------------------------------------------------------------
    refuse(SP, "attention", "fastest"), refuse(SP, "attention", None, "attention=null"),
    refuse(SP, "compile", ["x"], "compile=bad link"), refuse(SP, "cache", "teacache"), refuse(SP, "cache_threshold", NAN),
    refuse(SP, "cache_threshold", 2.0), refuse(SP, "cache_threshold", -0.1),
    refuse(SP, "cache_threshold", "high"), refuse(SP, "attention", "sage", "attention=sage on the CPU"),
    Row("compile with a step cache", SP, {"compile": True, "cache": "first_block"}, "refuse", "cache"),
    # -- the loader: value sets, traversal and NUL in names, damaged files ---------------------
    refuse(L, "model_set", "no-such-set"), refuse(L, "model_set", "../../../etc/passwd"),
    refuse(L, "model_set", "Wan2.1\x00x"), refuse(L, "model_set", 5), refuse(L, "model_set", None, "model_set=null"),
    refuse(L, "precision", "int4"), refuse(L, "precision", NAN), refuse(L, "offload", "disk"),
    refuse(L, "offload", ""), refuse(L, "offload", ["x"], "offload=bad link"), refuse(L, "offload", "Block"),
    refuse(L, "text_encoder", {}, "text_encoder={}"), refuse(L, "vae", {"a": 1}, "vae={a: 1}"),
    Row("truncated DiT", L, {"model_set": "Wan2.1-I2V-truncated-Diffusers"}, "file",
        "Wan2.1-I2V-truncated-Diffusers/transformer/diffusion_pytorch_model.safetensors"),
    Row("wrong-architecture DiT", L, {"model_set": "Wan2.1-I2V-wrongarch-Diffusers"}, "file",
        "Wan2.1-I2V-wrongarch-Diffusers/transformer"),
    # -- the LoRA node ----------------------------------------------------------------------
    refuse(R, "lora", "loras/none.safetensors"), refuse(R, "lora", "../../../../etc/passwd"),
    refuse(R, "lora", "loras/\x00.safetensors"), refuse(R, "strength", NAN), refuse(R, "strength", INF),
    refuse(R, "strength", 3.0), refuse(R, "strength", "strong"), refuse(R, "fuse_lora", ["x"], "fuse_lora=bad link"),
    Row("truncated LoRA", R, {"lora": "loras/truncated_lora.safetensors"}, "file",
        "loras/truncated_lora.safetensors"),
    Row("wrong-architecture LoRA", R, {"lora": "loras/sdxl_style_lora.safetensors"}, "file",
        "loras/sdxl_style_lora.safetensors"),
    # -- Video Combine: per-format crf, fps, format, every bad prefix --------------------------
    refuse(V, "crf", 52), refuse(V, "crf", 64), Row("crf=60 h265", V, {"format": "h265-mp4", "crf": 60},
                                                      "refuse", "crf"),
    refuse(V, "crf", NAN), refuse(V, "fps", 0.0), refuse(V, "fps", NAN), refuse(V, "fps", 500.0),
    refuse(V, "format", "gif"), refuse(V, "format", None, "format=null"),
    refuse(V, "filename_prefix", "../../x"), refuse(V, "filename_prefix", f"/tmp/{ESCAPE_MARK}/x"),
    refuse(V, "filename_prefix", "/etc/x"), refuse(V, "filename_prefix", f"%year%/../../{ESCAPE_MARK}"),
    refuse(V, "filename_prefix", "a/\x00/x"), refuse(V, "filename_prefix", "x" * 300, "prefix=300 chars"),
    refuse(V, "filename_prefix", "a\nb"), refuse(V, "filename_prefix", ""),
    # -- LoadImage (ComfyUI's own node) ---------------------------------------------------------
    refuse(I, "image", "../../../etc/passwd"), refuse(I, "image", "x\x00.png"), refuse(I, "image", "nope.png"),
    # -- valid but unusual: a video with everything embedded ---------------------------------
    Row("prompt 131,072 characters", S, {"prompt": BIG_PROMPT}, "video"),
    Row("prompt 100k emoji", S, {"prompt": EMOJI_PROMPT}, "video"),
    Row("prompt 30k CJK", S, {"prompt": CJK_PROMPT}, "video"),
    Row("workflow over 128 KiB", V, {}, "video", big_workflow=True),
    Row("unicode prefix", V, {"filename_prefix": "WanVolume/ünï 名前/kiss"}, "video"),
    Row("%year% prefix", V, {"filename_prefix": "WanVolume/%year%-%month%/kiss"}, "video"),
    Row("webm crf 63", V, {"format": "webm", "crf": 63}, "video"),
    Row("seed 2**64-1, cfg 1.0", S, {"seed": 2 ** 64 - 1, "cfg": 1.0}, "video"),
    Row("width as float 64.0", S, {"width": 64.0}, "video"),
    Row("strength 0", R, {"strength": 0.0}, "video"),
    Row("fit=keep", S, {"fit": "keep"}, "video"),
    Row("fit=pad", S, {"fit": "pad"}, "video"),
    Row("euler + distill_4step, 4 steps, cfg 1", S, FAST, "video"),
    Row("euler, schedule auto", S, {"sampler": "euler"}, "video"),
    Row("offload=block on CPU", L, {"offload": "block"}, "video"),
    Row("fuse_lora true", R, {"fuse_lora": True}, "video"),
    Row("speed node, defaults", SP, {}, "video"),
    Row("speed node, first_block cache", SP, {"cache": "first_block", "cache_threshold": 0.1}, "video"),
    Row("old prompt with trust_pth true", L, {"trust_pth": True}, "video"),
]
