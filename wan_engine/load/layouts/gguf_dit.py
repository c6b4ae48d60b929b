"""A GGUF DiT (city96's Wan2.1-I2V-14B-*-gguf, Q3_K_S .. Q8_0) through diffusers' GGUF support.

The Linear weights stay quantised in memory (``GGUFParameter`` in diffusers' ``GGUFLinear``) and
are dequantised layer by layer while the model runs; everything else (norms, modulation, the
patch embedding: F32/F16 in the file) follows the same dtype policy as the other layouts.
diffusers needs a config for a single file and the file carries none, so the architecture is
inferred from the header (as for ComfyUI's safetensors DiTs) and handed over in a temporary
folder; nothing is fetched. Checked with diffusers 0.42.1: its issue 12009 ("Cannot copy out of
meta tensor" for Wan GGUF files) does not occur there (tests/test_gguf.py).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch

from ...store import identify
from ..keymaps import dit
from . import build
from ...errors import WanVolumeError

# The oldest diffusers whose GGUF support runs a Wan DiT here (0.37 computes on the raw bytes).
GGUF_DIFFUSERS = (0, 42)

log = logging.getLogger(__name__)


def gguf_config(path: Path) -> dict:
    """``WanTransformer3DModel`` config from the GGUF header's tensor shapes."""
    shapes, _ = identify.gguf_tensors(path)
    return dit.infer_config({dit.strip_prefix(k, dit.PREFIXES): v for k, v in shapes.items()})


def read_gguf_dit(path: Path, dtype: torch.dtype, fp8_storage: bool = False):
    """The DiT of a ``.gguf`` file; quantised Linear weights compute in ``dtype``."""
    import diffusers

    found = tuple(int(x) for x in diffusers.__version__.split(".")[:2])
    if found < GGUF_DIFFUSERS:
        raise WanVolumeError(
            f"a GGUF DiT needs diffusers {'.'.join(map(str, GGUF_DIFFUSERS))} or newer (found "
            f"{diffusers.__version__}: its GGUF layers do not dequantise Wan's weights)",
            field="model_set", value=path.name,
            fix=f"pip install -U 'diffusers>={'.'.join(map(str, GGUF_DIFFUSERS))}' into ComfyUI's python, "
                "or use a safetensors DiT")
    if fp8_storage:
        log.warning("%s: fp8 storage does not apply to a GGUF DiT (its weights stay quantised, "
                    "which already takes less memory); loading without it", path.name)
    return from_checkpoint(_checkpoint(path), gguf_config(path), dtype)


def from_checkpoint(checkpoint, config: dict, dtype: torch.dtype, device: str | None = None):
    """The DiT from a GGUF checkpoint (a path, or the state dict diffusers' reader gives) and its
    inferred config; ``simulate.gguf_fake`` builds the full-size DiT through this too, from
    ``meta`` tensors onto ``device="meta"`` (nothing allocated)."""
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    with tempfile.TemporaryDirectory(prefix="wan-gguf-") as tmp:
        (Path(tmp) / "transformer").mkdir()
        (Path(tmp) / "transformer" / "config.json").write_text(
            json.dumps({"_class_name": "WanTransformer3DModel", **config}))
        # No torch_dtype: the file's F32 tensors arrive as they are, and the policy below casts
        # them the way from_pretrained does for the other layouts.
        model = WanTransformer3DModel.from_single_file(
            checkpoint, config=tmp, subfolder="transformer", local_files_only=True, device=device,
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype))
    _apply_policy(model, dtype)
    return model.eval()


def _checkpoint(path: Path):
    """The file itself, or, when city96's tools stored a tensor reshaped (GGUF has at most 4
    dimensions in llama.cpp; ``comfy.gguf.orig_shape.<name>`` gives the real shape), its tensors
    read by diffusers and reshaped back, so diffusers never sees the stored shape."""
    shapes, _ = identify.gguf_tensors(path)
    from gguf import GGUFReader

    reshaped = {f.name[len(identify.GGUF_ORIG_SHAPE):] for f in GGUFReader(str(path)).fields.values()
                if f.name.startswith(identify.GGUF_ORIG_SHAPE)}
    if not reshaped:
        return str(path)
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    sd = load_gguf_checkpoint(str(path))
    for name in reshaped:
        if getattr(sd[name], "quant_type", None) is not None:
            raise build.IncompatibleWeights(
                f"{name} is stored quantised AND reshaped; only unquantised reshaped tensors are "
                "supported", field="file", value=str(path),
                fix="use city96's file as published (its reshaped tensors are F32/F16)")
        sd[name] = sd[name].reshape(shapes[name])
    return sd


def _apply_policy(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Non-quantised weights in the dtype every other layout gives them (build.dit_policy)."""
    from diffusers.quantizers.gguf.utils import GGUFParameter

    policy = build.dit_policy(dtype)
    for name, param in model.named_parameters():
        if isinstance(param, GGUFParameter) or not param.is_floating_point():
            continue
        want = policy(name, torch.float32)
        if param.dtype != want:
            param.data = param.data.to(want)
