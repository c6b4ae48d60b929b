"""Build a Wan2.2 two-expert pipeline from the original Wan-AI layout or ComfyUI's files.

The pipeline is diffusers' own ``WanImageToVideoPipeline`` with ``transformer`` = the high-noise
expert, ``transformer_2`` = the low-noise expert, no image encoder (the experts have no CLIP
branch) and Wan's boundary 0.9; the sampler chooses the expert per step (sample/experts.py).
Each expert is read like a Wan2.1 DiT (components.read_dit / gguf_dit), the umT5, VAE and
tokenizer like the Wan2.1 layouts' (wan_pth for ``.pth``, components for safetensors).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import WanVolumeError
from ...store.modelset import ModelSet
from ...store.scan import comfy_files, wan22, wan_original
from . import build, components, gguf_dit, wan_pth
from .spec import LoadSpec

BOUNDARY = 0.9      # Wan2.2 I2V A14B's boundary (the sampler's default; stored in the pipeline's config)


def _read_expert(path: Path, spec: LoadSpec):
    """One expert from a shard index, a single safetensors file or a GGUF file."""
    if path.suffix == ".gguf":
        return gguf_dit.read_gguf_dit(path, spec.dtype, spec.fp8_storage)
    cfg = wan_original.read_config(path.parent) if path.name.startswith("diffusion_pytorch_model") else None
    shards = wan_original.dit_shards(path.parent)[0] if cfg is not None else [path]
    return components.read_dit(shards, spec.dtype, num_heads=(cfg or {}).get("num_heads"),
                               fp8_storage=spec.fp8_storage)


def build_wan22(model_set: ModelSet, spec: LoadSpec):
    """Either Wan2.2 layout (``wan22``: original folder; ``wan22-comfy``: ComfyUI files)."""
    from diffusers import WanImageToVideoPipeline

    original = model_set.layout == wan22.LAYOUT_WAN
    if model_set.missing:
        raise WanVolumeError(f"Wan2.2 model set is missing {', '.join(model_set.missing)}",
                             field="model_set", value=model_set.name,
                             fix=wan22.WAN_FIX if original else wan22.COMFY_FIX)
    c, dtype = model_set.components, spec.dtype
    parts = {}
    for name in ("transformer", "transformer_2"):
        parts[name] = _read_expert(Path(c[name]), spec)
        spec.loaded(_expert_files(Path(c[name])), name)
    if original:
        parts["text_encoder"] = wan_pth.read_t5(c["text_encoder"], dtype, spec)
        parts["vae"] = wan_pth.read_vae(c["vae"], spec)
        parts["tokenizer"] = build.load_tokenizer(c["tokenizer"], str(c["tokenizer"]))
    else:
        parts["text_encoder"] = components.read_umt5(c["text_encoder"], dtype)
        parts["vae"] = components.read_vae(c["vae"])
        parts["tokenizer"] = build.load_tokenizer(c.get("tokenizer"), str(model_set.root / comfy_files.TOKENIZER),
                                                  spiece_file=c.get("text_encoder"))
    spec.loaded([c["text_encoder"], c["vae"]], "text_encoder, vae")
    scheduler, _ = build.scheduler_and_processor("720p")
    return WanImageToVideoPipeline(scheduler=scheduler, image_encoder=None, image_processor=None,
                                   boundary_ratio=BOUNDARY, **parts)


def _expert_files(path: Path) -> list[Path]:
    if path.name.endswith(".index.json"):
        return wan_original.dit_shards(path.parent)[0]
    return [path]
