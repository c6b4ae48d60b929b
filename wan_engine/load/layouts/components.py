"""Read one component from single safetensors files (ComfyUI layout, Wan's DiT shards).

Each reader infers the architecture from the header's shapes, reads the tensors once in their
final dtype (fastload), applies scaled-fp8 scales, and assembles the module (build.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import fastload, fp8
from ..keymaps import clip, dit, t5, vae
from . import build

log = logging.getLogger(__name__)


class _Renamer:
    """A fastload ``rename`` that remembers which file keys it could not place."""

    def __init__(self, fn, ignore: tuple[str, ...] = ()) -> None:
        self.fn, self.ignore, self.unknown = fn, ignore, []

    def __call__(self, key: str) -> str | None:
        if key.split(".")[-1] in self.ignore or key.endswith(".scale_input"):
            return None
        new = self.fn(key)
        if new is None:
            self.unknown.append(key)
        return new

    def check(self, what: str, source: Path) -> None:
        if self.unknown:
            raise build.IncompatibleWeights(
                f"{what}: {len(self.unknown)} keys of unknown meaning (e.g. {self.unknown[:3]})",
                field="file", value=str(source),
                fix="use a Wan2.1 I2V file (Comfy-Org/Wan_2.1_ComfyUI_repackaged or Wan-AI)")


def _diffusers_named(keys: list[str]) -> bool:
    bare = [dit.strip_prefix(k, dit.PREFIXES) for k in keys]
    return any(k.startswith("condition_embedder.") or ".attn1." in k for k in bare)


def read_dit(paths: list[Path], dtype: torch.dtype, num_heads: int | None = None,
             config: dict | None = None, fp8_storage: bool = False):
    """The DiT from one file or several shards, Wan or diffusers key names, any dtype/fp8.

    ``config`` (a diffusers config.json) wins over the architecture inferred from shapes;
    ``fp8_storage`` keeps the Linear weights in fp8 in memory (fp8.py).
    """

    keys = [k for p in paths for k in fastload.read_header(p)]
    if _diffusers_named(keys):
        to_ours = lambda k: dit.strip_prefix(k, dit.PREFIXES)             # noqa: E731
        to_wan = lambda k: dit.diffusers_to_wan(dit.strip_prefix(k, dit.PREFIXES))  # noqa: E731
    else:
        to_ours = dit.wan_to_diffusers
        to_wan = lambda k: dit.strip_prefix(k, dit.PREFIXES)              # noqa: E731
    if config is None:
        config = dit.infer_config(fastload.header_shapes(paths, to_wan))
    if num_heads:
        config.update(num_attention_heads=num_heads, attention_head_dim=config["num_attention_heads"]
                      * config["attention_head_dim"] // num_heads)
    policy = build.dit_policy(dtype, fp8_storage)
    rename = _Renamer(to_ours, ignore=(fp8.MARKER,))
    sd, kept = _read_scaled(paths, keys, rename, fp8.read_dtype(policy), "DiT")
    return build.build_transformer(sd, config, dtype, paths[0], fp8_storage, kept)


def _read_scaled(paths: list[Path], keys: list[str], rename: "_Renamer", dtype_for,
                 what: str) -> tuple[dict, dict]:
    """Read every tensor into its dtype in memory; a scaled fp8 file's scales are read first and
    applied while each fp8 weight converts (fastload). Returns the state dict and the scales of
    the weights that stay in fp8 (fp8 storage), for their layers."""
    scales = {}
    if fp8.is_scaled(keys):
        only = lambda k: rename.fn(k) if k.endswith(fp8.SCALE_SUFFIX) else None   # noqa: E731
        scales = fp8.weight_scales(fastload.load_files(paths, only, lambda _k, _d: torch.float32))
    sd = fastload.load_files(paths, rename, dtype_for, scales=scales)
    rename.check(what, paths[0])
    kept = fp8.kept_scales(sd, scales)
    if scales:
        log.info("scaled fp8 %s: %d scales applied at load, %d kept with fp8 layers", what,
                 len(scales) - len(kept), len(kept))
    return sd, kept


def read_umt5(path: Path | list[Path], dtype: torch.dtype, config: dict | None = None):
    """umt5-xxl encoder from a ComfyUI file (HF names; fp16/bf16/fp8 scaled), Wan names, or
    the shards of a diffusers ``text_encoder/`` folder (with its ``config``)."""
    from transformers import UMT5EncoderModel

    def name(key: str) -> str | None:
        if key.startswith(("shared.", "encoder.")):
            return key
        return t5.T5.to_ours(key)

    paths = path if isinstance(path, list) else [path]
    if config is None:
        config = t5.infer_config(fastload.header_shapes(paths, _Renamer(name, ignore=t5.NON_WEIGHTS)))
    policy = build.dtype_policy(UMT5EncoderModel, dtype)
    rename = _Renamer(name, ignore=t5.NON_WEIGHTS)
    sd, kept = _read_scaled(paths, [k for p in paths for k in fastload.read_header(p)], rename, policy,
                            "umt5 text encoder")
    if kept:
        raise build.IncompatibleWeights("umt5 weights still in fp8 after loading", field="file",
                                        value=str(paths[0]), fix="report this as a bug")
    return build.build_text_encoder(sd, config, paths[0])


def read_clip_vision(path: Path):
    """CLIP ViT-H from ``clip_vision_h.safetensors`` (HF names, with or without vision_model.), or
    from a file in Wan's open-clip names (Kijai's ``open-clip-...-vit-huge-14_visual_fp16``)."""
    if "visual.cls_embedding" in fastload.read_header(path):
        return _read_clip_wan_names(path)

    def name(key: str) -> str | None:
        if key.startswith(("visual_projection.", "text_model.", "text_projection.", "logit_scale")):
            return None
        return clip.strip_vision_prefix(key)

    rename = _Renamer(name)
    shapes = fastload.header_shapes([path], rename)
    sd = fastload.load_file(path, rename, lambda k, d: torch.float32 if d.is_floating_point else d)
    return build.build_image_encoder(sd, clip.infer_config(shapes), path)


def _read_clip_wan_names(path: Path):
    """Wan's ``visual.*`` names need tensors reshaped and ``to_qkv`` split (keymaps.clip)."""
    raw = fastload.load_file(path, lambda k: k, _fp32)
    sd, unknown = {}, []
    for key, tensor in raw.items():
        try:
            sd.update({k: t.contiguous() for k, t in clip.convert(key, tensor).items()})
        except KeyError:
            unknown.append(key)
    del raw
    if unknown:
        raise build.IncompatibleWeights(
            f"CLIP vision: {len(unknown)} keys of unknown meaning (e.g. {unknown[:3]})", field="file",
            value=str(path), fix="use a Wan2.1 CLIP ViT-H file (clip_vision_h.safetensors or Kijai's "
                                 "open-clip-xlm-roberta-large-vit-huge-14_visual)")
    return build.build_image_encoder(sd, clip.infer_config({k: tuple(v.shape) for k, v in sd.items()}), path)


def read_vae(path: Path):
    """The Wan2.1 VAE from a single file (Wan names as ComfyUI ships it, or diffusers names).

    The architecture comes from the encoder's shapes, so the real VAE and small test VAEs load
    with the same code; decoder names depend on ``num_res_blocks`` and are mapped after.
    """
    raw = fastload.header_shapes([path])
    diffusers_named = any(k.startswith("decoder.up_blocks.") for k in raw)
    wan_shapes = {vae.diffusers_to_wan(k, 2): s for k, s in raw.items()} if diffusers_named else raw
    config = vae.infer_config(wan_shapes)
    nrb = config["num_res_blocks"]
    rename = _Renamer((lambda k: k) if diffusers_named else (lambda k: vae.wan_to_diffusers(k, nrb)))
    sd = fastload.load_file(path, rename, _fp32)
    rename.check("VAE", path)
    return build.build_vae(sd, config, path)


def _fp32(_key: str, file_dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if file_dtype.is_floating_point else file_dtype
