"""The set's parts at full size from fake tensors, built by the loader's own builders.

The shapes are the real Wan2.1-I2V-14B ones (the shipped configs, as ``sizes.reference`` counts
them); the tensors are fake (FakeTensorMode: no bytes read, nothing allocated) in the dtypes the
loader would give them (``build.dit_policy``/``dtype_policy``), so ``build_transformer`` with fp8
storage installs the very cast hooks a run has. A set on the volume is simulated with these shapes
after its header counts are checked against them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import WanVolumeError
from ..load import sizes
from ..load.layouts import build

CONFIGS = sizes.CONFIGS
SOURCE = Path("<simulated full-size set>")


def _config(name: str) -> dict:
    return {k: v for k, v in json.loads((CONFIGS / name).read_text()).items() if not k.startswith("_")}


def _meta_shapes(factory) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = factory()
    return {n: tuple(t.shape) for n, t in module.state_dict().items()}


def _fake(shapes: dict[str, tuple[int, ...]], policy) -> dict[str, torch.Tensor]:
    """Empty tensors in the loader's dtypes; under FakeTensorMode they are fake (on the CPU: RAM)."""
    return {k: torch.empty(s, dtype=policy(k, torch.bfloat16)) for k, s in shapes.items()}


def build_pipeline(dtype: torch.dtype, fp8_storage: bool, resolution: str = "720p", gguf: str | None = None):
    """A ``WanImageToVideoPipeline`` of fake full-size parts (call under the card's fake mode);
    ``gguf`` ("Q8_0", "Q4_K", ...): the DiT a GGUF file of that type loads into (gguf_fake.py)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    dit_cfg, vae_cfg = _config("transformer_i2v_14b.json"), _config("vae_wan21.json")
    if gguf:
        from . import gguf_fake
        dit = gguf_fake.build_dit(dtype, gguf, dit_cfg)
    else:
        dit_sd = _fake(_meta_shapes(lambda: WanTransformer3DModel(**dit_cfg)), build.dit_policy(dtype, fp8_storage))
        dit = build.build_transformer(dit_sd, dit_cfg, dtype, SOURCE, fp8_storage=fp8_storage)
    te_shapes = _meta_shapes(lambda: UMT5EncoderModel(UMT5Config(**sizes.UMT5_XXL)))
    te_shapes.pop("encoder.embed_tokens.weight", None)       # tied to `shared`, as the files hold it
    te = build.build_text_encoder(_fake(te_shapes, build.dtype_policy(UMT5EncoderModel, dtype)),
                                  sizes.UMT5_XXL, SOURCE)
    fp32 = build.dtype_policy(CLIPVisionModel, torch.float32, fp32_always=True)
    ie = build.build_image_encoder(
        _fake(_meta_shapes(lambda: CLIPVisionModel(CLIPVisionConfig(**sizes.CLIP_VIT_H))), fp32),
        sizes.CLIP_VIT_H, SOURCE)
    vae = build.build_vae(_fake(_meta_shapes(lambda: AutoencoderKLWan(**vae_cfg)), fp32), vae_cfg, SOURCE)
    pipe = build.assemble_pipeline({"tokenizer": None, "text_encoder": te, "vae": vae,
                                    "image_encoder": ie, "transformer": dit}, resolution)
    pipe._get_t5_prompt_embeds = _prompt_embeds(pipe)
    return pipe


def _prompt_embeds(pipe):
    """The umT5 over Wan's 512 tokens, as diffusers' ``_get_t5_prompt_embeds`` runs it. The
    tokenizer and the cut at the prompt's length are not simulated (the length would be a value
    of a fake tensor); the encoder always runs over all 512 tokens, so its memory is the same."""
    def embeds(prompt=None, num_videos_per_prompt=1, max_sequence_length=512, device=None, dtype=None):
        batch = 1 if isinstance(prompt, str) or prompt is None else len(prompt)
        model_device = next(pipe.text_encoder.parameters()).device
        ids = torch.zeros(batch, max_sequence_length, dtype=torch.long, device=model_device)
        mask = torch.ones(batch, max_sequence_length, dtype=torch.long, device=model_device)
        out = pipe.text_encoder(ids, mask).last_hidden_state
        return out.to(dtype=dtype or pipe.text_encoder.dtype, device=device or pipe._execution_device)
    return embeds


def check_shapes(counted: sizes.SetSizes) -> None:
    """Refuse a set whose DiT is not the 14B one the simulation builds (a GGUF DiT is built
    with its Linears in its main type, ``counted.dit_gguf``)."""
    ref = sizes.reference("wan2.1-i2v-14b-720p").dit
    if counted.dit_2 is not None:
        raise WanVolumeError("a Wan2.2 set (two experts): the simulation covers Wan2.1 sets only (one DiT)",
                             field="--set", value=counted.name, fix="plan it without --simulate")
    if counted.dit.gguf_bytes and not counted.dit_gguf:
        raise WanVolumeError("a GGUF DiT whose quantised type could not be read is not simulated",
                             field="--set", value=counted.name, fix="plan it without --simulate")
    if counted.dit.params and abs(counted.dit.params - ref.params) > ref.params // 100:
        raise WanVolumeError(f"its DiT has {counted.dit.params / 1e9:.2f} B parameters; the simulation "
                             f"builds Wan2.1-I2V-14B ({ref.params / 1e9:.2f} B)", field="--set",
                             value=counted.name, fix="plan it without --simulate")
