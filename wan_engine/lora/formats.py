"""Normalise any common Wan LoRA file to what the engine applies, and report the match.

Formats handled (each has a test in tests/test_lora_formats.py / test_lora_deltas.py):
- ``diffusion_model.blocks.N.self_attn.q.lora_A.weight`` / ``lora_B`` (Wan trainers, Remade-AI)
- ``...lora_down.weight`` / ``lora_up.weight`` + ``.alpha`` (+ ``.diff_b`` bias deltas)
- musubi-tuner ``lora_unet_blocks_N_self_attn_q.lora_down.weight``, all layers or only some
- bare ``blocks.N....`` keys (diffusers silently ignores them)
- diffusers-native ``transformer.blocks.N.attn1.to_q.lora_A.weight``
- a T2V LoRA on the I2V model (it simply has no ``k_img``/``v_img`` layers)
- full deltas (lightx2v distill LoRAs): ``.diff`` / ``.w_norm`` on any weight of the DiT (norms,
  ``modulation``, ``head``, embeddings, ``patch_embedding``), ``.diff_b`` / ``.b_norm`` /
  ``lora_B.bias`` on any bias; DoRA ``dora_scale`` (ComfyUI's semantics)
- ``<block>.diff_m`` (``blocks.N.diff_m``, ``head.diff_m`` in lightx2v's first distill LoRAs): a
  delta on ``<block>.modulation``, as LightX2V's loader applies it (ComfyUI ignores these keys)
- a module with both a full ``.diff`` and a low-rank pair: the ``.diff`` alone, as ComfyUI's
  ``load_lora`` does (its diff patch replaces the LoRA patch); logged and in the report

Low-rank pairs on Linear layers become peft adapters (``lora_A``/``lora_B``, alpha/rank folded
into ``lora_A`` so peft scales by the strength alone). Everything else becomes a weight patch
(lora_patches.py) with ComfyUI's semantics. Each module is checked against the model (layer
exists, shapes fit); what does not fit is counted as unmatched and named in the report.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import LoraMismatch
from ..load.keymaps import dit
from ..load.keymaps.common import strip_prefix
from .patches import Patch

log = logging.getLogger(__name__)

PREFIXES = ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model.",
            "lora_unet_", "lora_transformer_")
_KINDS = ((".lora_A.weight", "down"), (".lora_down.weight", "down"), (".lora_B.weight", "up"),
          (".lora_up.weight", "up"), (".lora_B.bias", "bias"), (".diff_b", "bias"),
          (".b_norm", "bias"), (".alpha", "alpha"), (".diff_m", "diff_m"), (".diff", "diff"),
          (".w_norm", "diff"), (".dora_scale", "dora"), (".lora_magnitude_vector.weight", "magnitude"),
          (".lora_magnitude_vector", "magnitude"))
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
    skipped: list[str] = field(default_factory=list)   # keys of no known kind (not applied)
    superseded: list[str] = field(default_factory=list)   # low-rank pairs a .diff replaced
    patched: int = 0                        # of the matched: applied as weight patches (full deltas)
    no_target: list[str] = field(default_factory=list)   # CLIP-branch modules on a DiT without one (Wan2.2)
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
        if self.patched:
            text += f"; {self.patched} as full deltas (diff/diff_b/DoRA)"
        if self.unmatched:
            text += f"; unmatched e.g. {', '.join(self.unmatched_examples[:3])}"
        if self.no_target:
            text += (f"; {len(self.no_target)} CLIP-branch modules have no target (this DiT has no image "
                     f"branch, as Wan2.2's experts; not applied, e.g. {self.no_target[0]})")
        if self.skipped:
            text += f"; {len(self.skipped)} keys not applied (e.g. {self.skipped[0]})"
        if self.superseded:
            text += (f"; {len(self.superseded)} low-rank pairs replaced by a full .diff on the same "
                     f"layer, as in ComfyUI (e.g. {self.superseded[0]})")
        return text


@dataclass
class ParsedLora:
    """A LoRA file split into peft adapter weights and weight patches, with its report."""

    peft: dict[str, torch.Tensor]
    patches: list[Patch]
    report: LoraReport


@dataclass
class _Module:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    bias: torch.Tensor | None = None
    diff: torch.Tensor | None = None
    dora: torch.Tensor | None = None


def detect_format(keys: list[str]) -> str:
    if any(k.startswith("lora_unet_") for k in keys):
        return "musubi lora_unet_"
    if any(k.startswith("transformer.") for k in keys):
        return "diffusers"
    updown = any(".lora_down." in k for k in keys)
    style = "lora_down/lora_up" + (" + alpha" if any(k.endswith(".alpha") for k in keys) else "")
    style = style if updown else "lora_A/lora_B"
    if any(k.endswith((".diff", ".diff_b", ".diff_m")) for k in keys):
        style += " + diff"
    if any(k.startswith(("diffusion_model.", "model.diffusion_model.")) for k in keys):
        return f"Wan {style}"
    if any(k.startswith("blocks.") for k in keys):
        return f"bare blocks.N {style}"
    return f"unknown ({style})"


def _split(key: str) -> tuple[str, str]:
    """(module, kind) of a LoRA key; ``<block>.diff_m`` is a full delta on ``<block>.modulation``
    (LightX2V's ``lora_loader`` maps it so; ComfyUI has no mapping and leaves it unloaded)."""
    for suffix, kind in _KINDS:
        if key.endswith(suffix):
            if kind == "diff_m":
                return key[: -len(suffix)] + ".modulation", "diff"
            return key[: -len(suffix)], kind
    return key, "other"


def _logical(param: torch.Tensor) -> torch.Tensor:
    """A GGUF-quantised weight (a GGUF DiT) holds bytes; the fit checks need its real shape."""
    shape = getattr(param, "quant_type", None) is not None and _gguf_shape(param)
    return torch.empty(shape, device="meta") if shape else param


def _gguf_shape(param: torch.Tensor) -> tuple[int, ...] | None:
    from gguf import GGML_QUANT_SIZES

    block, type_size = GGML_QUANT_SIZES[param.quant_type]
    return (*param.shape[:-1], param.shape[-1] // type_size * block)


@dataclass
class _Index:
    """The DiT's parameters by clean name (peft's ``.base_layer`` removed), their owners."""

    params: dict[str, torch.Tensor]
    linears: set[str]
    owners: set[str]
    underscored: dict[str, str]

    @classmethod
    def of(cls, transformer: torch.nn.Module) -> "_Index":
        params = {n.replace(".base_layer", ""): _logical(p) for n, p in transformer.named_parameters()
                  if "lora_" not in n}
        linears = {n.removesuffix(".base_layer") for n, m in transformer.named_modules()
                   if isinstance(m, torch.nn.Linear) and "lora_" not in n}
        owners = {n.removesuffix(".weight").removesuffix(".bias") for n in params}
        underscored: dict[str, str] = {}
        for n in owners:
            underscored[n.replace(".", "_")] = n
            wan = dit.diffusers_to_wan(n)
            if wan:
                underscored[wan.replace(".", "_")] = n
        return cls(params, linears, owners, underscored)

    def resolve(self, name: str) -> str | None:
        """The diffusers owner path (module, or a bare parameter) for a LoRA module name."""
        name = strip_prefix(name, PREFIXES)
        for cand in (dit.wan_to_diffusers(name), name, self.underscored.get(name)):
            if cand in self.owners:
                return cand
        return None

    def weight_of(self, owner: str) -> str | None:
        for cand in (f"{owner}.weight", owner):
            if cand in self.params:
                return cand
        return None


def _group(state_dict: dict[str, torch.Tensor], report: LoraReport, file: str) -> dict[str, _Module]:
    modules: dict[str, _Module] = {}
    for key, tensor in state_dict.items():
        name, kind = _split(key)
        if kind == "magnitude":
            raise _peft_dora(file, key)
        if kind == "other":
            report.skipped.append(key)
            continue
        mod = modules.setdefault(name, _Module())
        if kind == "alpha":
            mod.alpha = float(tensor.float().item())
        else:
            setattr(mod, kind, tensor)
    return modules


def _peft_dora(file: str, key: str) -> LoraMismatch:
    return LoraMismatch(
        f"this LoRA is a peft DoRA (key {key}); its magnitude vectors follow peft's rule, which "
        "ComfyUI does not apply either", field="lora", value=Path(file).name,
        fix="save the DoRA as a plain LoRA (merge it into lora_A/lora_B, e.g. peft's "
            "`merge_and_unload` then extract), or in kohya/LyCORIS form with `.dora_scale` keys")


def split_lora(state_dict: dict[str, torch.Tensor], transformer: torch.nn.Module,
               file: str = "") -> ParsedLora:
    """The peft part (``transformer.<path>.lora_A/B.weight``), the patches and the report."""
    report = LoraReport(file=file, format=detect_format(list(state_dict)))
    index = _Index.of(transformer)
    peft: dict[str, torch.Tensor] = {}
    patches: list[Patch] = []
    for name, mod in _group(state_dict, report, file).items():
        _diff_first(name, mod, report)
        owner = index.resolve(name)
        problem = _fit_problem(mod, owner, index)
        if problem:
            report.unmatched += 1
            report.unmatched_examples.append(f"{name} ({problem})")
            continue
        report.matched += 1
        mine = _convert(owner, mod, index, peft)
        patches += mine
        report.patched += 1 if mine else 0
    report.looks_like = guess_origin(state_dict)
    if getattr(getattr(transformer, "config", None), "image_dim", 0) is None:
        _no_image_branch(report)
    return ParsedLora(peft, patches, report)


CLIP_BRANCH = ("k_img", "v_img", "img_emb", "add_k_proj", "add_v_proj", "norm_added_k", "image_embedder")


def _no_image_branch(report: LoraReport) -> None:
    """A Wan2.1 LoRA's CLIP-branch modules on a DiT without that branch (Wan2.2's experts) have
    nothing to patch: reported as such, not as a mismatch."""
    clip = [e for e in report.unmatched_examples if any(part in e.split(" (")[0] for part in CLIP_BRANCH)]
    report.no_target += clip
    report.unmatched -= len(clip)
    report.unmatched_examples = [e for e in report.unmatched_examples if e not in clip]


def _diff_first(name: str, mod: _Module, report: LoraReport) -> None:
    """A full ``.diff`` replaces a low-rank pair on the same layer: ComfyUI's ``load_lora`` sets the
    layer's patch to the LoRA first and then overwrites it with the diff (``.diff_b`` stays)."""
    if mod.diff is None or (mod.down is None and mod.up is None):
        return
    log.warning("LoRA %s: %s has a full .diff and a low-rank pair; applying the .diff only, as "
                "ComfyUI does", Path(report.file).name, name)
    report.superseded.append(name)
    mod.down = mod.up = mod.dora = mod.alpha = None


def _fits(t: torch.Tensor | None, target: torch.Tensor | None) -> bool:
    return t is not None and target is not None and t.numel() == target.numel()


def _fit_problem(mod: _Module, owner: str | None, index: _Index) -> str:
    if owner is None:
        return "no such layer"
    weight = index.params.get(index.weight_of(owner) or "")
    if mod.diff is not None and not _fits(mod.diff, weight):
        return f"diff {tuple(mod.diff.shape)} vs weight {tuple(getattr(weight, 'shape', ()))}"
    if mod.bias is not None and not _fits(mod.bias, index.params.get(f"{owner}.bias")):
        return f"bias delta {tuple(mod.bias.shape)} does not fit"
    if mod.down is None and mod.up is None:
        if mod.dora is not None:
            return "dora_scale without lora_down/lora_up"
        return "" if mod.diff is not None or mod.bias is not None else "no weights"
    if mod.down is None or mod.up is None:
        return "down/up pair incomplete"
    if weight is None or weight.dim() < 2:
        return "low-rank pair on a 1-D weight"
    if mod.down.flatten(1).shape[1] != weight[0].numel():
        return f"in {tuple(mod.down.shape)} vs layer input {tuple(weight.shape[1:])}"
    if mod.up.flatten(1).shape != (weight.shape[0], mod.down.shape[0]):
        return f"up {tuple(mod.up.shape)} vs layer out_features {weight.shape[0]}"
    return ""


def _convert(owner: str, mod: _Module, index: _Index, peft: dict) -> list[Patch]:
    """Add the module's peft weights to ``peft``; return its weight patches."""
    patches = []
    weight = index.weight_of(owner)
    if mod.diff is not None:
        patches.append(Patch(weight, diff=mod.diff))
    if mod.bias is not None:
        patches.append(Patch(f"{owner}.bias", diff=mod.bias))
    if mod.down is None:
        return patches
    scale = 1.0 if mod.alpha is None else mod.alpha / mod.down.shape[0]
    if mod.dora is not None or owner not in index.linears:
        patches.append(Patch(weight, down=mod.down, up=mod.up, scale=scale, dora_scale=mod.dora))
        return patches
    down = mod.down if mod.alpha is None else (mod.down.float() * scale).to(mod.down.dtype)
    key = f"transformer.{owner}"
    peft[f"{key}.lora_A.weight"], peft[f"{key}.lora_B.weight"] = down, mod.up
    return patches


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
