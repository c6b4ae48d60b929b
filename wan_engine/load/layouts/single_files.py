"""Build a pipeline from the single-file layouts: the original Wan-AI folder and ComfyUI's files.

Both read the DiT with fastload and three more components, then add the tokenizer; they differ
only in which reader opens each file, so one function (build.build_from_parts) does the work.
"""
from __future__ import annotations

from ...store.modelset import ModelSet
from . import build, components, gguf_dit, wan_pth
from ...store.scan import comfy_files, wan_original
from .spec import LoadSpec

WAN_FIX = "finish it with `python wanvolume.py preload --profile wan21-i2v-720p`"


def build_wan(model_set: ModelSet, spec: LoadSpec):
    """The original layout; the .pth files are opened only after their hash check."""
    root, c, dtype = model_set.root, model_set.components, spec.dtype
    cfg = wan_original.read_config(root) or {}
    shards, _ = wan_original.dit_shards(root)
    readers = {
        "transformer": (lambda: components.read_dit(shards, dtype, num_heads=cfg.get("num_heads"),
                                                    fp8_storage=spec.fp8_storage), shards),
        "text_encoder": (lambda: wan_pth.read_t5(c["text_encoder"], dtype, spec), [c["text_encoder"]]),
        "image_encoder": (lambda: wan_pth.read_clip(c["image_encoder"], spec), [c["image_encoder"]]),
        "vae": (lambda: wan_pth.read_vae(c["vae"], spec), [c["vae"]]),
    }
    return build.build_from_parts(
        model_set, spec, readers, lambda: build.load_tokenizer(c.get("tokenizer"), str(c.get("tokenizer"))),
        build.resolution_of(root.name), WAN_FIX)


def build_comfy(model_set: ModelSet, spec: LoadSpec):
    """ComfyUI's single files; the tokenizer from its folder or the umt5 file's spiece_model."""
    c, dtype = model_set.components, spec.dtype
    if c["transformer"].suffix == ".gguf":
        read_transformer = lambda: gguf_dit.read_gguf_dit(c["transformer"], dtype, spec.fp8_storage)  # noqa: E731
    else:
        read_transformer = lambda: components.read_dit([c["transformer"]], dtype,  # noqa: E731
                                                       fp8_storage=spec.fp8_storage)
    readers = {
        "transformer": (read_transformer, [c["transformer"]]),
        "text_encoder": (lambda: components.read_umt5(c["text_encoder"], dtype), [c["text_encoder"]]),
        "image_encoder": (lambda: components.read_clip_vision(c["image_encoder"]), [c["image_encoder"]]),
        "vae": (lambda: components.read_vae(c["vae"]), [c["vae"]]),
    }
    tokenizer = lambda: build.load_tokenizer(c.get("tokenizer"),  # noqa: E731
                                             str(model_set.root / comfy_files.TOKENIZER),
                                             spiece_file=c.get("text_encoder"))
    return build.build_from_parts(model_set, spec, readers, tokenizer,
                                  build.resolution_of(c["transformer"].name), comfy_files.FIX)
