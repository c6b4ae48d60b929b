"""A full-size Wan2.2 I2V A14B set as header-only safetensors files (tests only).

Each part's real shapes come from its module built on the ``meta`` device (the shipped Wan2.1
config without the CLIP branch for the experts: no ``image_dim``/``added_kv_proj_dim``); the
files hold a real header and a sparse data region (no disk used, nothing read), which is all
``sizes.from_model_set`` reads.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from wan_engine.load import sizes
from wan_engine.store.modelset import ModelSet

ST_DTYPE = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3",
            torch.uint8: "U8"}


def write_header_only(path: Path, tensors: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> Path:
    header, offset = {}, 0
    for name, (shape, dtype) in tensors.items():
        n = 1
        for s in shape:
            n *= s
        end = offset + n * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)          # sparse: the data region takes no disk
    return path


def expert_shapes() -> dict[str, tuple[int, ...]]:
    from diffusers import WanTransformer3DModel

    cfg = {k: v for k, v in json.loads((sizes.CONFIGS / "transformer_i2v_14b.json").read_text()).items()
           if not k.startswith("_") and k not in ("image_dim", "added_kv_proj_dim")}
    with torch.device("meta"):
        dit = WanTransformer3DModel(**cfg)
    return {n: tuple(t.shape) for n, t in dit.state_dict().items()}


def write_fullsize_wan22(root: Path, dit_dtype: torch.dtype = torch.float8_e4m3fn) -> ModelSet:
    """The Comfy-Org files (experts in ``dit_dtype``; fp8 keeps the norms and biases in fp32)."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    def dtype_of(name: str, shape: tuple[int, ...]) -> torch.dtype:
        return dit_dtype if len(shape) >= 2 and ".blocks." in f".{name}" else (
            torch.float32 if dit_dtype == torch.float8_e4m3fn else dit_dtype)
    shapes = expert_shapes()
    comps = {}
    for comp, role in (("transformer", "high"), ("transformer_2", "low")):
        comps[comp] = write_header_only(
            root / "diffusion_models" / f"wan2.2_i2v_{role}_noise_14B_fp8_scaled.safetensors",
            {n: (s, dtype_of(n, s)) for n, s in shapes.items()})
    with torch.device("meta"):
        te = UMT5EncoderModel(UMT5Config(**sizes.UMT5_XXL))
        vae = AutoencoderKLWan(**json.loads((sizes.CONFIGS / "vae_wan21.json").read_text()))
    comps["text_encoder"] = write_header_only(
        root / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        {**{n: (tuple(t.shape), torch.bfloat16) for n, t in te.state_dict().items()
            if n != "encoder.embed_tokens.weight"},
         "spiece_model": ((4_548_313,), torch.uint8)})        # Comfy's umT5 file carries its tokenizer
    comps["vae"] = write_header_only(root / "vae" / "wan_2.1_vae.safetensors",
                                     {n: (tuple(t.shape), torch.float32) for n, t in vae.state_dict().items()})
    return ModelSet("wan2.2-i2v-a14b-fullsize", "comfy", root, comps)
