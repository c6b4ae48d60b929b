"""The set's parts at full size from fake tensors, built by the loader's own builders.

The shapes are the real Wan2.1-I2V-14B ones (the shipped configs, as ``sizes.reference`` counts
them); the tensors are fake (FakeTensorMode: no bytes read, nothing allocated) in the dtypes the
loader would give them (``build.dit_policy``/``dtype_policy``), so ``build_transformer`` with fp8
storage installs the very cast hooks a run has. A set on the volume is simulated with these shapes
after its header counts are checked against them.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WanVolumeError
from ..load import fp8, sizes
from ..load.layouts import build

SOURCE = Path("<simulated full-size set>")


_config = sizes.config
_dit_config = sizes.dit_config


def _meta_shapes(factory) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = factory()
    return {n: tuple(t.shape) for n, t in module.state_dict().items()}


def _fake(shapes: dict[str, tuple[int, ...]], policy) -> dict[str, torch.Tensor]:
    """Empty tensors in the loader's dtypes; under FakeTensorMode they are fake (on the CPU: RAM)."""
    return {k: torch.empty(s, dtype=policy(k, torch.bfloat16)) for k, s in shapes.items()}


def build_pipeline(dtype: torch.dtype, fp8_storage: bool, resolution: str = "720p", scaled: bool = False,
                   experts: bool = False, gguf: str | None = None):
    """A ``WanImageToVideoPipeline`` of fake full-size parts (call under the card's fake mode).
    ``scaled``: the DiT comes from a scaled fp8 file (ComfyUI's fp8_scaled); with fp8 storage each
    fp8 weight keeps its float32 scale and its layer upcasts as ``weight * scale`` (fp8.py).
    ``experts``: Wan2.2 I2V A14B, as layouts/wan22.py assembles it: two DiTs of the 14B shape
    without the CLIP branch (no ``image_dim``/``added_kv_proj_dim``), no image encoder.
    ``gguf`` ("Q8_0", "Q4_K", ...): the DiT a GGUF file of that type loads into (gguf_fake.py)."""
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    vae_cfg = _config("vae_wan21.json")
    te_shapes = _meta_shapes(lambda: UMT5EncoderModel(UMT5Config(**sizes.UMT5_XXL)))
    te_shapes.pop("encoder.embed_tokens.weight", None)       # tied to `shared`, as the files hold it
    te = build.build_text_encoder(_fake(te_shapes, build.dtype_policy(UMT5EncoderModel, dtype)),
                                  sizes.UMT5_XXL, SOURCE)
    fp32 = build.dtype_policy(AutoencoderKLWan, torch.float32, fp32_always=True)
    vae = build.build_vae(_fake(_meta_shapes(lambda: AutoencoderKLWan(**vae_cfg)), fp32), vae_cfg, SOURCE)
    if experts:
        from ..load.layouts.wan22 import BOUNDARY

        cfg = _dit_config(True)
        scheduler, _ = build.scheduler_and_processor("720p")
        pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=te, vae=vae, scheduler=scheduler,
                                       image_encoder=None, image_processor=None, boundary_ratio=BOUNDARY,
                                       transformer=_dit(cfg, dtype, fp8_storage, scaled),
                                       transformer_2=_dit(cfg, dtype, fp8_storage, scaled))
    else:
        pipe = build.assemble_pipeline({"tokenizer": None, "text_encoder": te, "vae": vae,
                                        "image_encoder": _clip(), "transformer": _dit(
                                            _dit_config(False), dtype, fp8_storage, scaled, gguf)},
                                       resolution)
    pipe._get_t5_prompt_embeds = _prompt_embeds(pipe)
    return pipe


def _dit(cfg: dict, dtype: torch.dtype, fp8_storage: bool, scaled: bool, gguf: str | None = None):
    from diffusers import WanTransformer3DModel

    if gguf:
        from . import gguf_fake
        return gguf_fake.build_dit(dtype, gguf, cfg)

    sd = _fake(_meta_shapes(lambda: WanTransformer3DModel(**cfg)), build.dit_policy(dtype, fp8_storage))
    scales = {k: torch.empty((), dtype=torch.float32) for k, t in sd.items()
              if t.dtype == fp8.STORAGE_DTYPE} if scaled and fp8_storage else None
    return build.build_transformer(sd, cfg, dtype, SOURCE, fp8_storage=fp8_storage, scales=scales)


def _clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    fp32 = build.dtype_policy(CLIPVisionModel, torch.float32, fp32_always=True)
    return build.build_image_encoder(
        _fake(_meta_shapes(lambda: CLIPVisionModel(CLIPVisionConfig(**sizes.CLIP_VIT_H))), fp32),
        sizes.CLIP_VIT_H, SOURCE)


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
    """Refuse a set whose DiT (each expert of a Wan2.2 set) is not the 14B one the simulation builds
    (a GGUF DiT is built with its Linears in its main type, ``counted.dit_gguf``)."""
    if counted.dit_2 is not None and counted.dit_2.gguf_bytes:
        raise WanVolumeError("a Wan2.2 set with a GGUF expert is not simulated",
                             field="--set", value=counted.name, fix="plan it without --simulate")
    if counted.dit.gguf_bytes and not counted.dit_gguf:
        raise WanVolumeError("a GGUF DiT whose quantised type could not be read is not simulated",
                             field="--set", value=counted.name, fix="plan it without --simulate")
    built = sizes.reference(sizes.WAN22[0] if counted.dit_2 is not None else "wan2.1-i2v-14b-720p").dit.params
    for dit in (counted.dit, counted.dit_2):
        if dit is not None and dit.params and abs(dit.params - built) > built // 100:
            raise WanVolumeError(f"its DiT has {dit.params / 1e9:.2f} B parameters; the simulation "
                                 f"builds the 14B shape ({built / 1e9:.2f} B)", field="--set",
                                 value=counted.name, fix="plan it without --simulate")
