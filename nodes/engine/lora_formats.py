"""Normalise any common Wan LoRA file to the keys diffusers/peft load, and report the match.

Formats handled (each has a test in tests/test_lora_formats.py):
- ``diffusion_model.blocks.N.self_attn.q.lora_A.weight`` / ``lora_B`` (Wan trainers, Remade-AI)
- ``...lora_down.weight`` / ``lora_up.weight`` + ``.alpha`` (+ ``.diff_b`` bias deltas)
- musubi-tuner ``lora_unet_blocks_N_self_attn_q.lora_down.weight``, all layers or only some
- bare ``blocks.N....`` keys (diffusers silently ignores them)
- diffusers-native ``transformer.blocks.N.attn1.to_q.lora_A.weight``
- a T2V LoRA on the I2V model (it simply has no ``k_img``/``v_img`` layers)

alpha/rank is folded into ``lora_A`` so peft runs every adapter with scaling 1 x strength.
Each LoRA module is checked against the model (layer exists, is Linear, shapes fit); what does
not fit is counted as unmatched and named in the report.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .keymaps import dit

log = logging.getLogger(__name__)

PREFIXES = ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model.",
            "lora_unet_", "lora_transformer_")
_KINDS = ((".lora_A.weight", "down"), (".lora_down.weight", "down"), (".lora_B.weight", "up"),
          (".lora_up.weight", "up"), (".lora_B.bias", "bias"), (".diff_b", "bias"),
          (".alpha", "alpha"), (".diff", "diff"), (".dora_scale", "dora"))
WAN_DIMS = {1536: "Wan 1.3B (Wan2.1 T2V-1.3B or a Wan2.2 1.3B fine-tune)", 3072: "Wan2.2 TI2V-5B",
            5120: "Wan 14B (Wan2.1 or Wan2.2 A14B)"}


@dataclass
class LoraReport:
    """How a LoRA file fits the model: shown in the LoRA node and logged."""

    file: str
    format: str
    matched: int = 0                        # LoRA modules applied to a layer of the model
    unmatched: int = 0                      # LoRA modules with no fitting layer
    unmatched_examples: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # keys we cannot apply (full diffs, DoRA)
    looks_like: str = ""

    @property
    def total(self) -> int:
        return self.matched + self.unmatched

    @property
    def status(self) -> str:
        if self.matched == 0:
            return "none"
        return "partial" if self.unmatched or self.skipped else "full"

    def summary(self) -> str:
        text = f"{self.matched}/{self.total} LoRA layers matched ({self.format})"
        if self.unmatched:
            text += f"; unmatched e.g. {', '.join(self.unmatched_examples[:3])}"
        if self.skipped:
            text += f"; {len(self.skipped)} keys not applied (e.g. {self.skipped[0]})"
        return text


@dataclass
class _Module:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    bias: torch.Tensor | None = None


def detect_format(keys: list[str]) -> str:
    if any(k.startswith("lora_unet_") for k in keys):
        return "musubi lora_unet_"
    if any(k.startswith("transformer.") for k in keys):
        return "diffusers"
    updown = any(".lora_down." in k for k in keys)
    style = "lora_down/lora_up" + (" + alpha" if any(k.endswith(".alpha") for k in keys) else "")
    style = style if updown else "lora_A/lora_B"
    if any(k.startswith(("diffusion_model.", "model.diffusion_model.")) for k in keys):
        return f"Wan {style}"
    if any(k.startswith("blocks.") for k in keys):
        return f"bare blocks.N {style}"
    return f"unknown ({style})"


def _split(key: str) -> tuple[str, str]:
    for suffix, kind in _KINDS:
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return key, "other"


def _strip(name: str) -> str:
    for p in PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def _linear_index(transformer: torch.nn.Module) -> tuple[dict, dict]:
    """diffusers name -> Linear, and underscore forms (musubi) of Wan/diffusers names -> name."""
    linears = {}
    for n, m in transformer.named_modules():
        parts = n.split(".")
        if isinstance(m, torch.nn.Linear) and not {"lora_A", "lora_B"} & set(parts):
            linears[n.removesuffix(".base_layer")] = m   # a layer already wrapped by peft
    underscored: dict[str, str] = {}
    for n in linears:
        underscored[n.replace(".", "_")] = n
        wan = dit.diffusers_to_wan(n)
        if wan:
            underscored[wan.replace(".", "_")] = n
    return linears, underscored


def _resolve(name: str, linears: dict, underscored: dict) -> str | None:
    """The diffusers module path for a LoRA module name in any naming, or None."""
    name = _strip(name)
    if name in linears:
        return name
    mapped = dit.wan_to_diffusers(name)
    if mapped in linears:
        return mapped
    return underscored.get(name)


def _group(state_dict: dict[str, torch.Tensor], report: LoraReport) -> dict[str, _Module]:
    modules: dict[str, _Module] = {}
    for key, tensor in state_dict.items():
        name, kind = _split(key)
        if kind in ("diff", "dora", "other"):
            report.skipped.append(key)
            continue
        mod = modules.setdefault(name, _Module())
        if kind == "alpha":
            mod.alpha = float(tensor.float().item())
        else:
            setattr(mod, kind, tensor)
    return modules


def normalise(state_dict: dict[str, torch.Tensor], transformer: torch.nn.Module,
              file: str = "") -> tuple[dict[str, torch.Tensor], LoraReport]:
    """``transformer.<diffusers path>.lora_A/B.weight`` (+ ``lora_B.bias``) and the report."""
    report = LoraReport(file=file, format=detect_format(list(state_dict)))
    linears, underscored = _linear_index(transformer)
    out: dict[str, torch.Tensor] = {}
    for name, mod in _group(state_dict, report).items():
        target = _resolve(name, linears, underscored)
        layer = linears.get(target) if target else None
        problem = _fit_problem(mod, layer)
        if problem:
            report.unmatched += 1
            report.unmatched_examples.append(f"{name} ({problem})")
            continue
        report.matched += 1
        out.update(_convert(target, mod, layer))
    report.looks_like = guess_origin(state_dict)
    return out, report


def _fit_problem(mod: _Module, layer: torch.nn.Linear | None) -> str:
    if layer is None:
        return "no such layer"
    if mod.down is None and mod.up is None:
        return "" if mod.bias is not None and mod.bias.shape == (layer.out_features,) else "bias only, wrong size"
    if mod.down is None or mod.up is None:
        return "down/up pair incomplete"
    if mod.down.ndim != 2 or mod.down.shape[1] != layer.in_features:
        return f"in {tuple(mod.down.shape)} vs layer in_features {layer.in_features}"
    if mod.up.shape != (layer.out_features, mod.down.shape[0]):
        return f"up {tuple(mod.up.shape)} vs layer out_features {layer.out_features}"
    return ""


def _convert(target: str, mod: _Module, layer: torch.nn.Linear) -> dict[str, torch.Tensor]:
    key = f"transformer.{target}"
    if mod.down is None:   # a bias delta alone: a rank-1 zero LoRA carries it
        mod.down = torch.zeros(1, layer.in_features, dtype=mod.bias.dtype)
        mod.up = torch.zeros(layer.out_features, 1, dtype=mod.bias.dtype)
    down = mod.down
    if mod.alpha is not None:
        scale = mod.alpha / down.shape[0]
        down = (down.float() * scale).to(mod.down.dtype)
    out = {f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": mod.up}
    if mod.bias is not None:
        out[f"{key}.lora_B.bias"] = mod.bias
    return out


def guess_origin(state_dict: dict[str, torch.Tensor]) -> str:
    """What the LoRA looks like it was made for, from its key names and shapes."""
    keys = list(state_dict)
    joined = "\n".join(keys[:2000])
    if "lora_te1_" in joined or "lora_te_" in joined or "input_blocks" in joined \
            or "down_blocks" in joined or "mid_block" in joined:
        return "Stable Diffusion 1.5/SDXL (UNet keys such as down_blocks/input_blocks)"
    if "double_blocks" in joined or "single_blocks" in joined or "single_transformer_blocks" in joined:
        return "Flux or HunyuanVideo (double_blocks/single_blocks keys)"
    dim = _wan_dim(state_dict)
    if dim is not None:
        return WAN_DIMS.get(dim, f"a Wan-style model with hidden size {dim}")
    if "transformer_blocks" in joined:
        return "another diffusers transformer (e.g. CogVideoX, LTX-Video, Mochi)"
    return "an unknown model (first key: " + (keys[0] if keys else "none") + ")"


def _wan_dim(state_dict: dict[str, torch.Tensor]) -> int | None:
    for key, t in state_dict.items():
        flat = key.replace("_", ".")
        if ("self.attn.q." in flat or "attn1.to.q." in flat) and t.ndim == 2 \
                and ("lora.A" in flat or "lora.down" in flat):
            return int(t.shape[1])
    return None
