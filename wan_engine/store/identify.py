"""What a model file is, told from its header (tensor names and shapes), never from its file name.

Torch-free, so the store recognises files without loading anything; the loaders' key maps
(load/keymaps/) build on the same facts. Each Wan2.1 I2V component is recognised in every form
users have it (/work/shared/WAN_KEYS.md):

- DiT: Wan/ComfyUI names (bare, ``model.diffusion_model.`` or ``diffusion_model.``), diffusers
  names, and GGUF files (city96's, tensor names as Wan's);
- umT5 encoder: transformers/ComfyUI names (``umt5_xxl_*``) and Wan's own (Kijai's
  ``umt5-xxl-enc-bf16``);
- CLIP ViT-H vision: transformers names (``clip_vision_h``) and Wan's open-clip names (Kijai's
  ``open-clip-xlm-roberta-large-vit-huge-14_visual_fp16``);
- VAE: Wan names (``wan_2.1_vae``, Kijai's ``Wan2_1_VAE_bf16``) and diffusers names.

``fit`` holds the sizes that must agree between the parts of one set (text width, image width,
latent channels), so a DiT is only paired with partners it can run with.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from . import stfile

log = logging.getLogger(__name__)

# ComfyUI's umt5 files carry the sentencepiece model as a uint8 tensor of this name.
SPIECE_TENSOR = "spiece_model"
DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
GGUF_ORIG_SHAPE = "comfy.gguf.orig_shape."   # city96: a tensor stored reshaped, its real shape

Shapes = Mapping[str, tuple]


@dataclass(frozen=True)
class Identity:
    kind: str                  # "dit" | "umt5" | "clip_vision" | "vae"
    form: str                  # key naming: "wan" | "diffusers" | "hf" | "gguf"
    precision: str             # the weights' main dtype: "F16", "BF16", "F32", "F8_E4M3", "Q4_K", ...
    fit: dict = field(default_factory=dict)   # sizes that must agree within a set
    scaled: bool = False       # ComfyUI scaled fp8 (per-layer scale_weight)
    spiece: bool = False       # a umt5 file carrying its tokenizer (``spiece_model``)
    i2v: bool = False          # a DiT with the CLIP image branch


def is_i2v_dit(keys: Iterable[str]) -> bool:
    """An I2V DiT carries the CLIP image branch (``img_emb`` / ``k_img``)."""
    return any(".k_img." in k or "img_emb." in k or ".add_k_proj." in k for k in keys)


def identify(shapes: Shapes, dtypes: Mapping[str, str], form: str | None = None) -> Identity | None:
    """The component these tensors make up, or None (a LoRA, another model, a shard, ...)."""
    precision = _main_dtype(shapes, dtypes)
    scaled = "scaled_fp8" in shapes or any(k.endswith(".scale_weight") for k in shapes)
    for probe in (_dit, _umt5, _clip, _vae):
        found = probe(shapes)
        if found is not None:
            kind, naming, fit = found
            return Identity(kind, form or naming, precision, fit, scaled,
                            spiece=SPIECE_TENSOR in shapes,
                            i2v=kind == "dit" and is_i2v_dit(shapes))
    return None


def _strip(shapes: Shapes, prefixes: tuple[str, ...]) -> dict[str, tuple]:
    for p in prefixes:
        if any(k.startswith(p) for k in shapes):
            return {k[len(p):]: v for k, v in shapes.items() if k.startswith(p)}
    return dict(shapes)


def _dit(shapes: Shapes):
    s = _strip(shapes, DIT_PREFIXES)
    patch = s.get("patch_embedding.weight")
    if patch is None or len(patch) != 5:
        return None
    if {"head.modulation", "text_embedding.0.weight", "head.head.weight"} <= s.keys():
        naming, text, head, image = "wan", "text_embedding.0.weight", "head.head.weight", "img_emb.proj.0.weight"
    elif {"scale_shift_table", "condition_embedder.text_embedder.linear_1.weight", "proj_out.weight"} <= s.keys():
        naming, text, head = "diffusers", "condition_embedder.text_embedder.linear_1.weight", "proj_out.weight"
        image = "condition_embedder.image_embedder.norm1.weight"
    else:
        return None
    out_channels = s[head][0] // max(1, patch[2] * patch[3] * patch[4])
    fit = {"text_dim": s[text][1], "z_dim": out_channels, "dim": patch[0], "in_dim": patch[1]}
    if image in s:
        fit["image_dim"] = s[image][0]
    return "dit", naming, fit


def _umt5(shapes: Shapes):
    if any(k.startswith("decoder.") for k in shapes):
        return None                 # a full T5 (encoder-decoder), not the encoder Wan uses
    if "shared.weight" in shapes and "encoder.final_layer_norm.weight" in shapes:
        naming, emb, bias = "hf", "shared.weight", "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
        blocks = {k.split(".")[2] for k in shapes if k.startswith("encoder.block.")}
    elif "token_embedding.weight" in shapes and "norm.weight" in shapes:
        naming, emb, bias = "wan", "token_embedding.weight", "blocks.{}.pos_embedding.embedding.weight"
        blocks = {k.split(".")[1] for k in shapes if k.startswith("blocks.")}
    else:
        return None
    # umT5 has a relative position bias in every block; T5 (Flux's t5xxl) only in the first.
    if not blocks or any(bias.format(b) not in shapes for b in blocks):
        return None
    return "umt5", naming, {"text_dim": shapes[emb][1]}


def _clip(shapes: Shapes):
    if "visual.cls_embedding" in shapes and "visual.transformer.0.attn.to_qkv.weight" in shapes:
        return "clip_vision", "wan", {"image_dim": shapes["visual.cls_embedding"][-1]}
    s = _strip(shapes, ("vision_model.",))
    if "embeddings.class_embedding" in s and "encoder.layers.0.self_attn.q_proj.weight" in s:
        return "clip_vision", "hf", {"image_dim": s["embeddings.class_embedding"][0]}
    return None


def _vae(shapes: Shapes):
    # Wan's VAE is a causal 3-D one: 5-D convolutions (image VAEs have 4-D ones).
    if len(shapes.get("encoder.conv1.weight", ())) == 5 and "decoder.conv1.weight" in shapes \
            and "conv1.weight" in shapes:
        return "vae", "wan", {"z_dim": shapes["conv1.weight"][0] // 2}
    if len(shapes.get("encoder.conv_in.weight", ())) == 5 and "quant_conv.weight" in shapes \
            and any(k.startswith("decoder.up_blocks.") for k in shapes):
        return "vae", "diffusers", {"z_dim": shapes["quant_conv.weight"][0] // 2}
    return None


def _main_dtype(shapes: Shapes, dtypes: Mapping[str, str]) -> str:
    """The dtype most matrix/conv weights are stored in (what "fp16 file" means to users)."""
    counts = Counter(dtypes[k] for k, v in shapes.items() if len(v) >= 2 and k in dtypes)
    return counts.most_common(1)[0][0] if counts else ""


# ---- reading a file's header, once per version of the file ------------------------------------

_cache: dict[tuple, "Identity | None | str"] = {}   # (path, size, mtime_ns) -> identity or problem


def identify_file(path: Path) -> Identity | None:
    """What ``path`` (``.safetensors`` or ``.gguf``) holds; None for anything else or a damaged file
    (``headers``/``damage`` report damage). Cached per (path, size, mtime): a big volume is read
    once, and a volume scan after a change re-reads only the changed files."""
    found = _read(Path(path))
    return found if isinstance(found, Identity) else None


def problem_of(path: Path) -> str | None:
    """Why ``path``'s header could not be read, if it could not (same cache as ``identify_file``)."""
    found = _read(Path(path))
    return found if isinstance(found, str) else None


def _read(path: Path):
    try:
        st = path.stat()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        if len(_cache) > 20_000:
            _cache.clear()
        try:
            _cache[key] = _identify_gguf(path) if path.suffix == ".gguf" else _identify_st(path)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            log.info("%s: header unreadable (%s)", path, exc)
            why = str(exc).split(": ", 1)[-1] or type(exc).__name__
            _cache[key] = (f"unreadable or truncated GGUF file ({why})" if path.suffix == ".gguf"
                           else why)
    return _cache[key]


def _identify_st(path: Path) -> Identity | None:
    header = stfile.read_header(path)
    return identify({n: t.shape for n, t in header.tensors.items()},
                    {n: t.dtype for n, t in header.tensors.items()})


def gguf_tensors(path: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """Tensor names -> (shape in torch order, GGML type name), from a GGUF header.

    GGUF lists dimensions fastest-first; torch order is the reverse. A tensor city96's tools
    stored reshaped carries its real shape in ``comfy.gguf.orig_shape.<name>``.
    """
    from gguf import GGUFReader   # numpy only; imported here so the CLI starts fast

    reader = GGUFReader(str(path))
    orig = {}
    for name, fld in reader.fields.items():
        if name.startswith(GGUF_ORIG_SHAPE):
            orig[name[len(GGUF_ORIG_SHAPE):]] = tuple(int(fld.parts[i][0]) for i in fld.data)
    shapes = {t.name: orig.get(t.name, tuple(int(d) for d in reversed(t.shape))) for t in reader.tensors}
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise ValueError(f"its tensors end at byte {end}, the file has {path.stat().st_size}")
    return shapes, {t.name: t.tensor_type.name for t in reader.tensors}


def _identify_gguf(path: Path) -> Identity | None:
    shapes, types = gguf_tensors(path)
    return identify(shapes, types, form="gguf")
