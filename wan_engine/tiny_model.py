"""A tiny random-weight Wan2.1 I2V model set, written in diffusers layout.

Used by the demo when no real model set is on the volume, and by the tests. The shapes follow the
rules that config-less files rely on (DiT head_dim 128, text_dim 4096, image_dim 1280, CLIP ViT-H
16 heads, umt5 relative max distance 128), so the same weights can also be written in the original
Wan and ComfyUI single-file layouts. Everything is built offline, seeded, in a few seconds.
"""
from __future__ import annotations

import json
import logging
import string
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TINY_SET_NAME = "Wan2.1-I2V-tiny-demo-Diffusers"

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=36,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=256,
    rope_max_seq_len=1024,
)
VAE_CONFIG = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                  temperal_downsample=[False, True, True])
TEXT_ENCODER_CONFIG = dict(vocab_size=None, d_model=4096, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                           relative_attention_num_buckets=8, relative_attention_max_distance=128,
                           feed_forward_proj="gated-gelu", dense_act_fn="gelu_new",
                           is_encoder_decoder=False, pad_token_id=0, eos_token_id=1)
IMAGE_ENCODER_CONFIG = dict(hidden_size=1280, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=16, image_size=224, patch_size=14, projection_dim=32,
                            hidden_act="gelu")
SCHEDULER_CONFIG = dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                        num_train_timesteps=1000, flow_shift=5.0)


def build_tokenizer():
    """A Unigram tokenizer over lowercase words and characters, fully offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    words = ("two people kiss kissing k144ing engage in then they the a and of smile camera "
             "video woman man face close up low quality blurry static").split()
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in words]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("\u2581" + c, -6.0) for c in string.ascii_letters]
    pieces.append(("\u2581", -8.0))
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                           unk_token="<unk>", extra_ids=0, model_max_length=512)


def build_components(seed: int = 0) -> dict:
    """Every pipeline component, seeded, in float32."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config,
                              UMT5EncoderModel)

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    text_cfg = dict(TEXT_ENCODER_CONFIG, vocab_size=len(tokenizer))
    text_encoder = UMT5EncoderModel(UMT5Config(**text_cfg))
    image_encoder = CLIPVisionModel(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG))
    image_processor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    scheduler = UniPCMultistepScheduler(**SCHEDULER_CONFIG)
    _randomize_zero_inits(transformer)
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                image_encoder=image_encoder, image_processor=image_processor, scheduler=scheduler)


def _randomize_zero_inits(transformer: torch.nn.Module) -> None:
    """Wan zero-inits some projections; random values make LoRA and layout tests meaningful."""
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in transformer.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def write_diffusers_set(dest: Path, seed: int = 0) -> Path:
    """Write the tiny set as a diffusers-layout folder ``dest`` and return it."""
    from diffusers import WanImageToVideoPipeline

    dest = Path(dest)
    pipe = WanImageToVideoPipeline(**build_components(seed))
    pipe.save_pretrained(dest, safe_serialization=True)
    (dest / "README.txt").write_text(
        "Tiny random-weight Wan2.1 I2V model set made by ComfyUI-WanVolume for demos and tests.\n"
        "It produces noise-like videos; put a real model set on the volume for real output.\n")
    log.info("wrote tiny model set to %s", dest)
    return dest


def ensure_demo_set(models_dir: Path) -> Path:
    """The tiny demo set under ``models_dir``, written once."""
    dest = Path(models_dir) / TINY_SET_NAME
    if not (dest / "model_index.json").is_file():
        write_diffusers_set(dest)
    return dest


def ensure_demo_lora(models_dir: Path, rank: int = 4, seed: int = 7) -> Path:
    """A tiny LoRA in the kissing LoRA's key style (``diffusion_model.blocks.N....lora_A/B``)."""
    return _write_lora(Path(models_dir) / "loras" / "tiny_kissing_style_lora.safetensors",
                       lambda: make_wan_style_lora(rank=rank, seed=seed), "wan-lora_A-lora_B")


def _write_lora(path: Path, make, style: str) -> Path:
    """Write ``make()``'s tensors to ``path`` once (an existing file is kept)."""
    from safetensors.torch import save_file

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(make(), str(path), metadata={"made_by": "ComfyUI-WanVolume tiny_model", "style": style})
    return path


TINY_DISTILL_LORA = "loras/tiny_distill_style_lora.safetensors"


def ensure_demo_distill_lora(models_dir: Path, rank: int = 4, seed: int = 11) -> Path:
    """A tiny LoRA in lightx2v's distill-LoRA key style: ``lora_down``/``lora_up``/``diff_b`` on
    every linear, plus ``.diff`` on norms (``cross_attn.norm_k_img``, ``norm3``)."""
    return _write_lora(Path(models_dir) / TINY_DISTILL_LORA,
                       lambda: make_distill_style_lora(rank=rank, seed=seed), "lightx2v-distill")


def make_distill_style_lora(rank: int = 4, seed: int = 11, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """lightx2v-style keys for the tiny DiT (``diffusion_model.blocks.N.``, down/up, diff_b, diff)."""
    cfg = TRANSFORMER_CONFIG
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, tensor in make_wan_style_lora(rank=rank, seed=seed, scale=scale).items():
        base, kind = key.rsplit(".lora_", 1)
        out[f"{base}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor
        if kind.startswith("B"):
            out[f"{base}.diff_b"] = torch.randn(tensor.shape[0], generator=gen) * 0.05
    for n in range(cfg["num_layers"]):
        for norm in ("cross_attn.norm_k_img", "norm3"):
            out[f"diffusion_model.blocks.{n}.{norm}.diff"] = torch.randn(dim, generator=gen) * 0.05
    return out


def make_wan_style_lora(rank: int = 4, seed: int = 7, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """LoRA weights for every attention and FFN linear of the tiny DiT, Wan key names."""
    cfg = TRANSFORMER_CONFIG
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    gen = torch.Generator().manual_seed(seed)
    shapes = {f"{attn}.{p}": (dim, dim) for attn in ("self_attn", "cross_attn") for p in "qkvo"}
    shapes.update({"cross_attn.k_img": (dim, dim), "cross_attn.v_img": (dim, dim),
                   "ffn.0": (cfg["ffn_dim"], dim), "ffn.2": (dim, cfg["ffn_dim"])})
    out = {}
    for n in range(cfg["num_layers"]):
        for name, (out_f, in_f) in shapes.items():
            key = f"diffusion_model.blocks.{n}.{name}"
            out[f"{key}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * scale
            out[f"{key}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * scale
    return out


def describe(dest: Path) -> str:
    index = json.loads((Path(dest) / "model_index.json").read_text())
    return ", ".join(k for k in index if not k.startswith("_"))
