"""The diffusers layout, with the two big components read by fastload.

``from_pretrained`` memory-maps the official repo's fp32 shards and converts them, so peak RAM
is ~3x the bf16 DiT (bench/bench_load.py) and mmap page faults are slow on network volumes.
Here the DiT and umt5 shards are read sequentially into the chosen dtype (peak ~1.1x); the
small components (VAE, CLIP, tokenizer, scheduler, image processor) use ``from_pretrained``.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from ...store import stfile
from ...store.modelset import ModelSet, files_under
from .. import compat, readahead
from . import components
from .spec import LoadSpec

FAST = ("transformer", "text_encoder")


def _config(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build_diffusers_fast(model_set: ModelSet, spec: LoadSpec):
    from diffusers import WanImageToVideoPipeline

    root, dtype = model_set.root, spec.dtype
    index = json.loads((root / "model_index.json").read_text())
    parts = {}
    # the encoders first, the DiT last: the order the read-ahead reads in (readahead.ORDER)
    for name, entry in sorted(index.items(), key=lambda kv: readahead.order_key(kv[0])):
        if name.startswith("_") or not isinstance(entry, list):
            continue
        folder = root / name
        if entry[0] is None:
            parts[name] = None
            continue
        if name in ("transformer", "transformer_2"):     # Wan2.2: the high- and the low-noise expert
            parts[name] = components.read_dit(stfile.weight_files(folder), dtype, config=_config(folder),
                                              fp8_storage=spec.fp8_storage)
        elif name == "text_encoder" and entry[1] == "UMT5EncoderModel":
            cfg = {k: v for k, v in _config(folder).items()
                   if k not in ("architectures", "dtype", "torch_dtype", "transformers_version")}
            parts[name] = components.read_umt5(stfile.weight_files(folder), dtype, config=cfg)
        else:
            cls = getattr(importlib.import_module(entry[0]), entry[1])
            kwargs = {"local_files_only": True}
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
                kwargs.update(compat.dtype_kwargs(cls, torch.float32))
            parts[name] = cls.from_pretrained(str(folder), **kwargs)
        spec.loaded(files_under(folder), name)
    return WanImageToVideoPipeline(**parts, boundary_ratio=index.get("boundary_ratio"))
