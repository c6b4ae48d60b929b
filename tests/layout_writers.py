"""Write ONE tiny random-weight model in every layout users put on the volume.

- ``write_diffusers`` (the spine's layout), ``write_wan`` (original Wan-AI: config.json, DiT
  shards + index, ``.pth`` T5/CLIP/VAE with Wan's own key names, tokenizer folder), and
  ``write_comfy`` (ComfyUI single files: DiT bf16/fp16/fp8_e4m3fn/fp8_scaled with the
  ``model.diffusion_model.`` prefix, umt5 fp16/fp8 scaled, clip_vision_h, wan_2.1_vae).
- ``tiny_spiece`` trains a small sentencepiece model offline (multilingual text, byte fallback
  optional); ``with_spiece_tokenizer`` makes it the components' tokenizer, so a ComfyUI umt5
  file can carry it as ``spiece_model`` (as ComfyUI's files do) and every layout tokenizes alike.
- ``representable`` rounds every weight to a value exact in bf16 AND fp16, so files in any
  16-bit dtype hold the same numbers and the same seed must give bit-identical frames.
"""
from __future__ import annotations

import functools
import shutil
import io
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wan_engine.store import manifest
from wan_engine.load.keymaps import clip, dit, t5, vae
from wan_engine.load.layouts import spiece
from wan_engine.store.scan import wan_original
from wan_engine.sample.sampling import WAN_NEGATIVE_PROMPT

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def representable(components: dict) -> dict:
    """Round weights in place: bf16 precision, and nothing below fp16's normal range."""
    with torch.no_grad():
        for comp in components.values():
            if isinstance(comp, torch.nn.Module):
                for p in comp.parameters():
                    q = p.detach().to(torch.bfloat16).float()
                    q[q.abs() < 2.0 ** -13] = 0.0
                    p.copy_(q)
    return components


def write_diffusers(dest: Path, components: dict) -> Path:
    from diffusers import WanImageToVideoPipeline

    WanImageToVideoPipeline(**components).save_pretrained(dest, safe_serialization=True)
    return dest


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return path


# ---- Wan key names -------------------------------------------------------------------------

def wan_dit(transformer) -> dict[str, torch.Tensor]:
    return {dit.diffusers_to_wan(k): v for k, v in transformer.state_dict().items()}


def wan_t5(text_encoder) -> dict[str, torch.Tensor]:
    return {t5.T5.to_theirs(k): v for k, v in text_encoder.state_dict().items()
            if k != "encoder.embed_tokens.weight"}


def wan_clip(image_encoder, seed: int = 5) -> dict[str, torch.Tensor]:
    """Wan's open-clip key names, plus a small text tower, ``visual.head`` and ``log_scale``."""
    hf = image_encoder.state_dict()
    out = {"visual.cls_embedding": hf["embeddings.class_embedding"].reshape(1, 1, -1),
           "visual.pos_embedding": hf["embeddings.position_embedding.weight"].unsqueeze(0)}
    layers = {int(k.split(".")[2]) for k in hf if k.startswith("encoder.layers.")}
    for n in layers:
        base = f"encoder.layers.{n}.self_attn"
        for part in ("weight", "bias"):
            out[f"visual.transformer.{n}.attn.to_qkv.{part}"] = torch.cat(
                [hf[f"{base}.{p}_proj.{part}"] for p in "qkv"])
    for k, v in hf.items():
        if "embeddings.class_embedding" in k or "position_embedding" in k or "_proj." in k \
                and "out_proj" not in k:
            continue
        out[clip.CLIP.to_theirs(k)] = v
    gen = torch.Generator().manual_seed(seed)
    dim = hf["embeddings.class_embedding"].shape[0]
    out["visual.head"] = torch.randn(dim, 32, generator=gen)
    out["textual.token_embedding.weight"] = torch.randn(50, 16, generator=gen)
    out["textual.blocks.0.attn.q.weight"] = torch.randn(16, 16, generator=gen)
    out["log_scale"] = torch.tensor(4.6)
    return out


def wan_vae(vae_model) -> dict[str, torch.Tensor]:
    nrb = vae_model.config.num_res_blocks
    return {vae.diffusers_to_wan(k, nrb): v for k, v in vae_model.state_dict().items()}


def write_wan(dest: Path, components: dict, shards: int = 3) -> Path:
    """The original Wan-AI layout; ``.pth`` files as torch.save writes them (zip, mmap-able)."""
    dest.mkdir(parents=True, exist_ok=True)
    tr = components["transformer"]
    cfg = tr.config
    (dest / "config.json").write_text(json.dumps({
        "__name__": "Config", "_class_name": "WanModel", "_diffusers_version": "0.30.0",
        "model_type": "i2v", "dim": cfg.num_attention_heads * cfg.attention_head_dim,
        "in_dim": cfg.in_channels, "out_dim": cfg.out_channels, "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim, "num_heads": cfg.num_attention_heads,
        "num_layers": cfg.num_layers, "text_len": 512, "eps": 1e-6}))
    sd = {k: v.float() for k, v in wan_dit(tr).items()}                 # Wan ships fp32 shards
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        _save({k: sd[k] for k in part}, dest / name)
        weight_map.update({k: name for k in part})
    (dest / wan_original.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    torch.save({k: v.to(torch.bfloat16) for k, v in wan_t5(components["text_encoder"]).items()},
               dest / wan_original.FILES["text_encoder"])
    torch.save(wan_clip(components["image_encoder"]), dest / wan_original.FILES["image_encoder"])
    torch.save(wan_vae(components["vae"]), dest / wan_original.FILES["vae"])
    components["tokenizer"].save_pretrained(dest / wan_original.FILES["tokenizer"])
    return dest


def record_manifest(models_dir: Path, files: list[Path], name: str = "wan21-i2v-720p") -> None:
    """A manifest as the preload writes it, for ``files`` (so .pth hashes can be checked)."""
    entries = {}
    for f in files:
        rel = f.relative_to(models_dir).as_posix()
        entries[rel] = manifest.ManifestEntry(rel, f.stat().st_size, manifest.file_sha256(f),
                                              "Wan-AI/Wan2.1-I2V-14B-720P", "0" * 40, rel)
    manifest.save_manifest(models_dir, manifest.Manifest(name=name, entries=entries))


# ---- the umt5 tokenizer as a sentencepiece model ----------------------------------------------

SPIECE_TEXT = ["two people smile, then they engage in k144ing kissing.",
               "a woman and a man kiss in the rain, close up, camera slowly moves",
               "The quick brown fox jumps over the lazy dog. 0123456789 ?!",
               "low quality, blurry, static video of a face", WAN_NEGATIVE_PROMPT,
               "😀 😘 ❤️ 💋 emoji kiss", "Zoë café naïve ＡＢＣ"]


@functools.lru_cache(maxsize=None)
def tiny_spiece(vocab_size: int = 150, byte_fallback: bool = False, multilingual: bool = False) -> bytes:
    """A unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2), trained offline.

    ``multilingual`` adds the Chinese negative prompt and emoji to the training text; the
    default (English only, no byte fallback) stays below the tiny text encoder's 175 ids.
    """
    import sentencepiece

    text = SPIECE_TEXT if multilingual else SPIECE_TEXT[:4]
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text * 10), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", byte_fallback=byte_fallback, character_coverage=1.0, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    return buf.getvalue()


def write_tokenizer_folder(dest: Path, model: bytes) -> Path:
    """A tokenizer folder as the Hub has it: ``spiece.model`` plus the tokenizer config."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "spiece.model").write_bytes(model)
    (dest / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    (dest / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
         "unk_token": "<unk>", "extra_ids": 0, "model_max_length": 512}))
    return dest


def with_spiece_tokenizer(components: dict) -> dict:
    """Make ``tiny_spiece()`` the tokenizer of ``components`` (what write_comfy embeds)."""
    components["tokenizer"] = spiece.tokenizer_from_spiece(tiny_spiece())
    assert len(components["tokenizer"]) <= components["text_encoder"].config.vocab_size
    return components


# ---- ComfyUI single files ------------------------------------------------------------------

def _scaled(sd: dict[str, torch.Tensor], linear) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if linear(k, v):
            scale = (v.abs().max().float() / FP8_MAX).clamp(min=1e-12)
            out[k] = (v.float() / scale).to(FP8)
            out[k[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
        else:
            out[k] = v
    return out


def _dit_linear(k: str, v: torch.Tensor) -> bool:
    return k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2


def comfy_dit(transformer, variant: str) -> dict[str, torch.Tensor]:
    return comfy_dit_from_wan(wan_dit(transformer), variant)


def comfy_dit_from_wan(sd: dict[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """A ComfyUI DiT file's tensors from Wan-named ones, in one of ComfyUI's variants."""
    if variant in ("bf16", "fp16"):
        sd = {k: v.to(torch.bfloat16 if variant == "bf16" else torch.float16) for k, v in sd.items()}
    elif variant == "fp8_e4m3fn":
        sd = {k: v.to(FP8) if _dit_linear(k, v) else v.to(torch.bfloat16) for k, v in sd.items()}
    elif variant == "fp8_scaled":
        sd = _scaled({k: v.to(torch.bfloat16) if not _dit_linear(k, v) else v
                      for k, v in sd.items()}, _dit_linear)
        sd["scaled_fp8"] = torch.zeros(2, dtype=FP8)
    else:
        raise ValueError(variant)
    return {f"model.diffusion_model.{k}": v for k, v in sd.items()}


def comfy_umt5(text_encoder, variant: str, spiece_model: bytes | None = None) -> dict[str, torch.Tensor]:
    """ComfyUI's umt5 file; ``spiece_model`` as ComfyUI stores it (a uint8 tensor of the proto)."""
    sd = {k: v for k, v in text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    if spiece_model is not None:
        extra = {spiece.TENSOR: torch.frombuffer(bytearray(spiece_model), dtype=torch.uint8)}
    else:
        extra = {}
    if variant == "fp16":
        return {**{k: v.half() for k, v in sd.items()}, **extra}
    linear = lambda k, v: v.ndim == 2 and k.startswith("encoder.block.") and "relative" not in k  # noqa: E731
    out = _scaled({k: v if linear(k, v) else v.half() for k, v in sd.items()}, linear)
    out["scaled_fp8"] = torch.zeros(0, dtype=FP8)
    return {**out, **extra}


def write_comfy(models_dir: Path, components: dict, dit_variants=("bf16",),
                umt5_variant: str = "fp16", tokenizer: str = "spiece") -> list[Path]:
    """ComfyUI's folders under ``models_dir``; returns the DiT files written.

    ``tokenizer``: ``"spiece"`` (as ComfyUI users have it: ``tiny_spiece()`` inside the umt5
    file, no tokenizer folder; pair with ``with_spiece_tokenizer``), ``"folder"`` (the
    components' tokenizer in ``tokenizers/umt5-xxl/``, no ``spiece_model``), or ``"none"``.
    """
    if tokenizer not in ("spiece", "folder", "none"):
        raise ValueError(tokenizer)
    dits = []
    for variant in dit_variants:
        path = models_dir / "diffusion_models" / f"wan2.1_i2v_720p_tiny_{variant}.safetensors"
        dits.append(_save(comfy_dit(components["transformer"], variant), path))
    name = "umt5_xxl_fp16" if umt5_variant == "fp16" else "umt5_xxl_fp8_e4m3fn_scaled"
    spm = tiny_spiece() if tokenizer == "spiece" else None
    _save(comfy_umt5(components["text_encoder"], umt5_variant, spm),
          models_dir / "text_encoders" / f"{name}.safetensors")
    clip_sd = {f"vision_model.{k}": v.half() for k, v in components["image_encoder"].state_dict().items()}
    clip_sd["visual_projection.weight"] = torch.zeros(32, clip_sd["vision_model.post_layernorm.weight"].shape[0],
                                                      dtype=torch.float16)
    _save(clip_sd, models_dir / "clip_vision" / "clip_vision_h.safetensors")
    _save({k: v.to(torch.bfloat16) for k, v in wan_vae(components["vae"]).items()},
          models_dir / "vae" / "wan_2.1_vae.safetensors")
    if tokenizer == "folder":
        components["tokenizer"].save_pretrained(models_dir / "tokenizers" / "umt5-xxl")
    return dits


# ---- ComfyUI folders as users fill them: renamed, Kijai's files, split_files/, GGUF -------------

KIJAI = {"diffusion_models": "Wan2_1-I2V-14B-720P_bf16.safetensors",   # bare Wan keys, no prefix
         "text_encoders": "umt5-xxl-enc-bf16.safetensors",
         "clip_vision": "open-clip-xlm-roberta-large-vit-huge-14_visual_fp16.safetensors",
         "vae": "Wan2_1_VAE_bf16.safetensors"}
RENAMED = {"diffusion_models": "my_wan_i2v_model.safetensors",
           "text_encoders": "wan21UMT5XxlFP32_fp32.safetensors",
           "clip_vision": "clipVisionH_wan.safetensors", "vae": "wan21VAE_bf16.safetensors"}
SPLIT = "split_files"        # hf download --local-dir keeps the repo's folders


def write_kijai(models_dir: Path, components: dict) -> dict[str, Path]:
    """Kijai's WanVideo_comfy files: umt5 in Wan's own key names (bf16, no spiece_model), the
    open-clip visual tower in Wan's names (fp16, with ``log_scale``), the VAE in Wan's names."""
    visual = {k: v.half() for k, v in wan_clip(components["image_encoder"]).items()
              if k.startswith("visual.")}
    parts = {"text_encoders": {k: v.to(torch.bfloat16) for k, v in wan_t5(components["text_encoder"]).items()},
             "clip_vision": {**visual, "log_scale": torch.tensor(4.6052)},
             "vae": {k: v.to(torch.bfloat16) for k, v in wan_vae(components["vae"]).items()}}
    return {kind: _save(sd, models_dir / kind / KIJAI[kind]) for kind, sd in parts.items()}


def quantize_q4_k(data):
    """ggml's block_q4_K: per 256 values fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins,
    128 bytes of nibbles; 8 sub-blocks of 32 values, value = d*sc*q - dmin*m."""
    import numpy as np

    rows = data.reshape(-1, 256).astype(np.float32)
    n = rows.shape[0]
    sub = rows.reshape(n, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)                 # mins are subtracted: keep <= 0
    hi = sub.max(axis=2)
    scale = (hi - lo) / 15.0
    mins = -lo
    d = scale.max(axis=1) / 63.0
    dmin = mins.max(axis=1) / 63.0
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    df, dminf = d16.astype(np.float32)[:, None], dmin16.astype(np.float32)[:, None]
    sc = np.clip(np.round(np.divide(scale, df, out=np.zeros_like(scale), where=df > 0)), 0, 63).astype(np.uint8)
    m = np.clip(np.round(np.divide(mins, dminf, out=np.zeros_like(mins), where=dminf > 0)), 0, 63).astype(np.uint8)
    eff_s = (df * sc)[:, :, None]
    eff_m = (dminf * m)[:, :, None]
    q = np.clip(np.round(np.divide(sub + eff_m, eff_s, out=np.zeros_like(sub), where=eff_s > 0)), 0, 15).astype(np.uint8)
    packed = np.zeros((n, 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(n, 128)
    blocks = np.concatenate([d16.view(np.uint8).reshape(n, 2), dmin16.view(np.uint8).reshape(n, 2), packed, qs], axis=1)
    return blocks.reshape(*data.shape[:-1], data.shape[-1] // 256 * 144)


def gguf_dit(transformer, path: Path, qtype: str = "Q8_0", orig_shape: bool = False) -> Path:
    """A GGUF DiT as city96's tools write it: Wan key names without prefix, 2-D weights of more
    than 1,024 values quantised (rows the block size does not divide in F16), the rest (1-D,
    ``modulation``, the 5-D patch embedding) F32. ``orig_shape``: store the patch embedding
    flattened to 2-D with its real shape in ``comfy.gguf.orig_shape.<name>``."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), "wan")
    for key, value in wan_dit(transformer).items():
        data = value.float().numpy()
        if key == "patch_embedding.weight" and orig_shape:
            writer.add_array(f"comfy.gguf.orig_shape.{key}", list(data.shape))
            data = data.reshape(data.shape[0], -1)
            writer.add_tensor(key, data.astype(np.float32))
        elif data.ndim == 2 and data.size > 1024 and "modulation" not in key:
            if data.shape[1] % block:
                writer.add_tensor(key, data.astype(np.float16))
            else:
                # gguf's Python quantiser writes no K-quants (most downloads are Q4_K_M..Q6_K)
                q = quantize_q4_k(data) if qtype == "Q4_K" else gguf.quants.quantize(data, kind)
                writer.add_tensor(key, q, raw_shape=q.shape, raw_dtype=kind)
        else:
            writer.add_tensor(key, data.astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_comfy_as(models_dir: Path, components: dict, style: str, qtype: str = "Q8_0") -> Path:
    """A ComfyUI models folder filled one of the ways users fill it; returns the DiT file.

    ``renamed``: every file under another name, the umt5 in fp32 (``wan21UMT5XxlFP32_fp32``).
    ``kijai``: Kijai's WanVideo_comfy files: the DiT with bare Wan keys, umt5/CLIP/VAE (no ``spiece_model``: the tokenizer comes from
    ``tokenizers/umt5-xxl/``, as for WanVideoWrapper users). ``split``: every file where
    ``hf download Comfy-Org/... split_files/<kind>/X --local-dir models/<kind>``
    leaves it. ``gguf``: a GGUF DiT in ``unet/`` with ComfyUI's other files.
    """
    if style == "kijai":
        write_comfy(models_dir, components, ("bf16",), tokenizer="folder")
        for kind in ("diffusion_models", "text_encoders", "clip_vision", "vae"):
            shutil.rmtree(models_dir / kind)
        write_kijai(models_dir, components)
        return _save({k.removeprefix("model.diffusion_model."): v
                      for k, v in comfy_dit(components["transformer"], "bf16").items()},
                     models_dir / "diffusion_models" / KIJAI["diffusion_models"])
    dit = write_comfy(models_dir, components, ("bf16",))[0]
    if style == "renamed":
        _save({k: v.float() if v.is_floating_point() else v
               for k, v in load_file(str(models_dir / "text_encoders" / "umt5_xxl_fp16.safetensors")).items()},
              models_dir / "text_encoders" / RENAMED["text_encoders"])
        (models_dir / "text_encoders" / "umt5_xxl_fp16.safetensors").unlink()
        for kind in ("diffusion_models", "clip_vision", "vae"):
            (old,) = (models_dir / kind).glob("*.safetensors")
            old.rename(models_dir / kind / RENAMED[kind])
        return models_dir / "diffusion_models" / RENAMED["diffusion_models"]
    if style == "split":
        for kind in ("diffusion_models", "text_encoders", "clip_vision", "vae"):
            (old,) = (models_dir / kind).glob("*.safetensors")
            new = models_dir / kind / SPLIT / kind / old.name
            new.parent.mkdir(parents=True)
            old.rename(new)
        return models_dir / "diffusion_models" / SPLIT / "diffusion_models" / dit.name
    if style == "gguf":
        dit.unlink()
        (models_dir / "diffusion_models").rmdir()
        return gguf_dit(components["transformer"], models_dir / "unet" / f"wan2.1-i2v-14b-720p-{qtype}.gguf", qtype)
    raise ValueError(style)
