"""Write ONE tiny Wan2.2 two-expert set in every layout users have (tests only).

- ``write_wan22_diffusers``: Wan-AI/Wan2.2-I2V-A14B-Diffusers (transformer/ = high, transformer_2/ = low)
- ``write_wan22_original``: Wan-AI/Wan2.2-I2V-A14B (high_noise_model/, low_noise_model/, fp32 shards,
  ``models_t5_umt5-xxl-enc-bf16.pth``, ``Wan2.1_VAE.pth``, ``google/umt5-xxl/``)
- ``write_wan22_comfy``: ComfyUI folders filled as people fill them: Comfy-Org's
  ``wan2.2_i2v_{high,low}_noise_14B_fp16`` (``comfy``), the same under ``split_files/`` (``split``),
  Kijai's ``Wan2_2-I2V-A14B-{HIGH,LOW}_bf16`` with bare Wan keys (``kijai``), QuantStack's
  ``{HighNoise,LowNoise}/Wan2.2-I2V-A14B-{HighNoise,LowNoise}-Q8_0.gguf`` in ``unet/`` (``gguf``).
Weights pass ``layout_writers.representable`` first, so 16-bit files hold the fp32 reference's numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

import layout_writers as lw
from wan_engine import tiny_wan22
from wan_engine.store.scan import wan_original

COMFY_STYLES = ("comfy", "split", "kijai", "gguf")
ORIGINAL_NAME = "Wan2.2-I2V-A14B-tiny"


def components(seed: int = 0) -> dict:
    """The tiny Wan2.2 components, representable in 16 bits, with the sentencepiece tokenizer."""
    return lw.with_spiece_tokenizer(lw.representable(tiny_wan22.build_components(seed)))


def write_wan22_diffusers(dest: Path, comps: dict) -> Path:
    return tiny_wan22.write_diffusers_set(dest, components=comps)


def _expert_folder(dest: Path, expert, shards: int = 2) -> None:
    cfg = expert.config
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "_diffusers_version": "0.33.0", "model_type": "i2v",
        "dim": cfg.num_attention_heads * cfg.attention_head_dim, "in_dim": cfg.in_channels,
        "out_dim": cfg.out_channels, "ffn_dim": cfg.ffn_dim, "freq_dim": cfg.freq_dim,
        "num_heads": cfg.num_attention_heads, "num_layers": cfg.num_layers, "text_len": 512, "eps": 1e-6}))
    sd = {k: v.float() for k, v in lw.wan_dit(expert).items()}
    keys, weight_map = sorted(sd), {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        lw._save({k: sd[k] for k in keys[i::shards]}, dest / name)
        weight_map.update({k: name for k in keys[i::shards]})
    (dest / wan_original.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_wan22_original(models_dir: Path, comps: dict, name: str = ORIGINAL_NAME) -> Path:
    root = models_dir / name
    _expert_folder(root / "high_noise_model", comps["transformer"])
    _expert_folder(root / "low_noise_model", comps["transformer_2"])
    (root / "configuration.json").write_text(json.dumps({"framework": "Pytorch", "task": "image-to-video"}))
    torch.save({k: v.to(torch.bfloat16) for k, v in lw.wan_t5(comps["text_encoder"]).items()},
               root / wan_original.FILES["text_encoder"])
    torch.save(lw.wan_vae(comps["vae"]), root / wan_original.FILES["vae"])
    comps["tokenizer"].save_pretrained(root / wan_original.FILES["tokenizer"])
    return root


def expert_names(style: str) -> dict[str, str]:
    """The two expert files' paths below ``diffusion_models/`` (``unet/`` for GGUF)."""
    if style == "kijai":
        return {r: f"Wan2_2-I2V-A14B-{r.upper()}_bf16.safetensors" for r in ("high", "low")}
    if style == "gguf":
        return {r: f"{r.capitalize()}Noise/Wan2.2-I2V-A14B-{r.capitalize()}Noise-Q8_0.gguf" for r in ("high", "low")}
    prefix = f"{lw.SPLIT}/diffusion_models/" if style == "split" else ""
    return {r: f"{prefix}wan2.2_i2v_{r}_noise_14B_fp16.safetensors" for r in ("high", "low")}


def write_wan22_comfy(models_dir: Path, comps: dict, style: str = "comfy") -> dict[str, Path]:
    """Experts and partners (umt5 fp16 with its spiece_model, wan_2.1_vae) as ``style``; no CLIP."""
    if style not in COMFY_STYLES:
        raise ValueError(style)
    names = expert_names(style)
    out = {}
    for role, comp in (("high", "transformer"), ("low", "transformer_2")):
        if style == "gguf":
            out[role] = lw.gguf_dit(comps[comp], models_dir / "unet" / names[role], "Q8_0")
            continue
        sd = lw.comfy_dit(comps[comp], "bf16" if style == "kijai" else "fp16")
        if style == "kijai":
            sd = {k.removeprefix("model.diffusion_model."): v for k, v in sd.items()}
        out[role] = lw._save(sd, models_dir / "diffusion_models" / names[role])
    lw._save(lw.comfy_umt5(comps["text_encoder"], "fp16", lw.tiny_spiece()),
             models_dir / "text_encoders" / "umt5_xxl_fp16.safetensors")
    lw._save({k: v.to(torch.bfloat16) for k, v in lw.wan_vae(comps["vae"]).items()},
             models_dir / "vae" / "wan_2.1_vae.safetensors")
    return out
