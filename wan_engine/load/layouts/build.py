"""Turn state dicts (already in our key names) into pipeline components, without copies.

Modules are created with empty (meta) parameters and the loaded tensors are assigned, so a
component never exists twice in memory. Precision follows what ``from_pretrained`` does for the
diffusers layout, so every layout gives the same numbers: the DiT in the chosen dtype with
diffusers' fp32 modules kept fp32, the text encoder in the chosen dtype, VAE and CLIP in fp32.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from .. import fp8
from ...errors import WanVolumeError

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ENV_TRUST_PTH = "WAN_VOLUME_TRUST_PTH"
ENV_FP8_STORAGE = "WAN_VOLUME_FP8_STORAGE"


def env_switch(name: str) -> bool:
    """An operator's environment switch (``=1``) for load options."""
    return os.environ.get(name) == "1"


class IncompatibleWeights(WanVolumeError):
    """A weight file whose keys or shapes do not fit the component it should hold."""


def dtype_policy(model_cls: type, dtype: torch.dtype, fp32_always: bool = False) -> Callable:
    """(our key, file dtype) -> dtype in memory, mirroring from_pretrained's rules."""
    keep = set(getattr(model_cls, "_keep_in_fp32_modules", None) or ())
    if model_cls.__module__.startswith("transformers") and dtype != torch.float16:
        keep = set()   # transformers keeps `wo` in fp32 only for fp16

    def policy(key: str, file_dtype: torch.dtype) -> torch.dtype:
        if not file_dtype.is_floating_point:
            return file_dtype
        if key.endswith(fp8.SCALE_SUFFIX) or fp32_always:
            return torch.float32
        if keep and dtype != torch.float32 and keep & set(key.split(".")):
            return torch.float32
        return dtype
    return policy


def instantiate(factory: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor],
                what: str, source: Path) -> torch.nn.Module:
    """``factory()`` with empty parameters, then every tensor assigned; all must fit."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = factory()
    missing, unexpected = module.load_state_dict(state_dict, strict=False, assign=True)
    tied = getattr(module, "_tied_weights_keys", None) or {}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise IncompatibleWeights(
            f"{what}: {len(missing)} weights missing (e.g. {missing[:3]}), {len(unexpected)} "
            f"unexpected (e.g. {unexpected[:3]})", field="file", value=str(source),
            fix="check that the file is a Wan2.1 I2V component and complete "
                "(`python wanvolume.py verify`)")
    left = [n for n, p in list(module.named_parameters()) + list(module.named_buffers())
            if p.device.type == "meta"]
    if left:
        raise IncompatibleWeights(f"{what}: {len(left)} weights left uninitialised (e.g. {left[:3]})",
                                  field="file", value=str(source), fix="re-download the file")
    return module.eval()


def dit_policy(dtype: torch.dtype, fp8_storage: bool = False) -> Callable:
    """The DiT's dtype policy; with fp8 storage, the stored Linear weights are read as fp8."""
    from diffusers import WanTransformer3DModel

    policy = dtype_policy(WanTransformer3DModel, dtype)
    return fp8.storage_policy(policy, WanTransformer3DModel) if fp8_storage else policy


def build_transformer(sd: dict[str, torch.Tensor], config: dict, dtype: torch.dtype, source: Path,
                      fp8_storage: bool = False, scales: dict[str, torch.Tensor] | None = None):
    """The DiT from its weights; ``scales`` are a scaled fp8 file's scales of the weights still
    in fp8 (fp8 storage keeps them with their layers)."""
    from diffusers import WanTransformer3DModel

    stored_fp8 = any(t.dtype in fp8.FP8_DTYPES for t in sd.values())
    model = instantiate(lambda: WanTransformer3DModel(**config), sd, "DiT", source)
    if fp8_storage:     # any source dtype and precision (fp32 computes in fp32)
        fp8.enable_fp8_storage(model, dtype, scales)
    elif stored_fp8:
        raise IncompatibleWeights("DiT weights still in fp8 after loading", field="file",
                                  value=str(source), fix="report this as a bug")
    return model


def build_text_encoder(sd: dict[str, torch.Tensor], config: dict, source: Path):
    from transformers import UMT5Config, UMT5EncoderModel

    sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])
    model = instantiate(lambda: UMT5EncoderModel(UMT5Config(**config)), sd, "umt5 text encoder", source)
    model.encoder.embed_tokens = model.shared
    return model


def build_image_encoder(sd: dict[str, torch.Tensor], config: dict, source: Path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return instantiate(lambda: CLIPVisionModel(CLIPVisionConfig(**config)), sd, "CLIP vision", source)


def build_vae(sd: dict[str, torch.Tensor], config: dict, source: Path):
    from diffusers import AutoencoderKLWan

    return instantiate(lambda: AutoencoderKLWan(**config), sd, "VAE", source)


def load_tokenizer(folder: Path | None, source_hint: str, spiece_file: Path | None = None):
    """The umt5 tokenizer from its folder, else from ``spiece_file``'s ``spiece_model`` tensor."""
    from transformers import AutoTokenizer

    from . import spiece

    if folder is not None and Path(folder).is_dir():
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if spiece_file is not None:
        return spiece.tokenizer_from_spiece(spiece.read_spiece(spiece_file), str(spiece_file))
    raise WanVolumeError(
        "the umt5-xxl tokenizer is missing", field="tokenizer", value=str(folder),
        fix=f"put google/umt5-xxl's tokenizer files in {source_hint} (the preload profile "
            "does it: `python wanvolume.py preload --profile comfy-720p-bf16`)")


def scheduler_and_processor(resolution: str = "720p"):
    from diffusers import UniPCMultistepScheduler
    from transformers import CLIPImageProcessor

    sched_cfg = json.loads((CONFIGS / f"scheduler_{resolution}.json").read_text())
    sched_cfg.pop("_class_name", None)
    proc_cfg = json.loads((CONFIGS / "image_processor.json").read_text())
    proc_cfg.pop("image_processor_type", None)
    return UniPCMultistepScheduler(**sched_cfg), CLIPImageProcessor(**proc_cfg)


def resolution_of(name: str) -> str:
    return "480p" if "480" in name else "720p"


def assemble_pipeline(parts: dict, resolution: str):
    from diffusers import WanImageToVideoPipeline

    scheduler, processor = scheduler_and_processor(resolution)
    return WanImageToVideoPipeline(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
                                   vae=parts["vae"], scheduler=scheduler, image_processor=processor,
                                   image_encoder=parts["image_encoder"],
                                   transformer=parts["transformer"])


Reader = tuple[Callable[[], torch.nn.Module], list[Path]]   # (read the component, its files)


def build_from_parts(model_set, spec, readers: dict[str, Reader], tokenizer: Callable[[], object],
                     resolution: str, fix: str):
    """What every single-file layout does: refuse an incomplete set, read each component
    (reporting its bytes), add the tokenizer, and assemble the pipeline."""
    if model_set.missing:
        raise WanVolumeError(f"{model_set.layout} model set is missing {', '.join(model_set.missing)}",
                             field="model_set", value=model_set.name, fix=fix)
    parts = {}
    for name, (read, files) in readers.items():
        parts[name] = read()
        spec.loaded(files, name)
    parts["tokenizer"] = tokenizer()
    return assemble_pipeline(parts, resolution)
