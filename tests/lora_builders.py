"""Tiny LoRA files with every kind of key a Wan LoRA carries, and their merge by hand.

``distill_style_lora`` writes what lightx2v's step-distill LoRAs hold (REFERENCE.md section 3):
``lora_down``/``lora_up`` + ``alpha`` (alpha != rank) on the blocks' Linear layers, ``.diff`` on
every other weight (norms, ``modulation``, ``head``, embeddings, ``patch_embedding``) and
``.diff_b`` on every bias, in Wan key names with the ``diffusion_model.`` prefix.
``merge_by_hand`` applies it with ComfyUI's rules written out:
``W += s * diff``, ``b += s * diff_b``, ``W += s * alpha / rank * up @ down``.
"""
from __future__ import annotations

import copy

import torch

import layout_writers as lw
from wan_engine.load.keymaps import dit

RANK, ALPHA = 4, 8.0
PREFIX = "diffusion_model."


def _randn(shape, gen, scale: float) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen) * scale


def distill_style_lora(transformer, seed: int = 0, rank: int = RANK, alpha: float = ALPHA,
                       scale: float = 0.05) -> dict[str, torch.Tensor]:
    """A LoRA touching every weight and bias of ``transformer`` (a diffusers Wan DiT)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, w in lw.wan_dit(transformer).items():
        module, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            module, leaf = key, ""          # a bare parameter: blocks.N.modulation, head.modulation
        base = PREFIX + module
        if leaf == "bias":
            out[f"{base}.diff_b"] = _randn(w.shape, gen, scale)
        elif leaf == "weight" and w.ndim == 2 and module.startswith("blocks."):
            out[f"{base}.lora_down.weight"] = _randn((rank, w.shape[1]), gen, 0.3)
            out[f"{base}.lora_up.weight"] = _randn((w.shape[0], rank), gen, 0.3)
            out[f"{base}.alpha"] = torch.tensor(alpha)
        else:
            out[f"{base}.diff"] = _randn(w.shape, gen, scale)
    return out


def _wan_param(module: str, leaf: str, wan_keys: set[str]) -> str:
    if leaf == "bias":
        return f"{module}.bias"
    return f"{module}.weight" if f"{module}.weight" in wan_keys else module


def merge_by_hand(transformer, lora: dict[str, torch.Tensor], strength: float = 1.0):
    """A copy of ``transformer`` with ``lora`` merged into its weights (ComfyUI's rules)."""
    ref = copy.deepcopy(transformer)
    wan_keys = set(lw.wan_dit(ref))
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for key, t in lora.items():
            name = key.removeprefix(PREFIX)
            if name.endswith((".diff_b", ".diff", ".diff_m")):
                module, kind = name.rsplit(".", 1)
                if kind == "diff_m":            # lightx2v: <block>.diff_m is <block>.modulation's delta
                    module += ".modulation"
                param = params[dit.wan_to_diffusers(_wan_param(module, "bias" if kind == "diff_b" else "",
                                                               wan_keys))]
                param += strength * t.reshape(param.shape)
            elif name.endswith(".lora_down.weight"):
                module = name.removesuffix(".lora_down.weight")
                up = lora[f"{PREFIX}{module}.lora_up.weight"]
                alpha = float(lora[f"{PREFIX}{module}.alpha"])
                param = params[dit.wan_to_diffusers(f"{module}.weight")]
                delta = up.flatten(1) @ t.flatten(1)            # a conv pair: kernel dims folded
                param += strength * (alpha / t.shape[0]) * delta.reshape(param.shape)
    return ref


class FileReads:
    """Counts the safetensors files read from disk (a spy on ``safetensors.torch.load_file``,
    which ``apply.read_lora_file`` imports at call time)."""

    def __init__(self, monkeypatch) -> None:
        import safetensors.torch as st

        self.paths: list[str] = []
        real = st.load_file

        def spy(path, *args, **kwargs):
            self.paths.append(str(path))
            return real(path, *args, **kwargs)
        monkeypatch.setattr(st, "load_file", spy)

    @property
    def count(self) -> int:
        return len(self.paths)


# The step-distill LoRAs people download, by key form (docs/lora.md names the evidence for each):
# - "lightx2v": lightx2v/Wan2.1-I2V-14B-{480P,720P}-StepDistill-CfgDistill-Lightx2v,
#   loras/Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors (July 2025): low-rank
#   pairs with .diff_b, norm .diff, and blocks.N.diff_m / head.diff_m (ComfyUI: "lora key not loaded")
# - "kijai": Kijai/WanVideo_comfy Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank{4..256}_bf16:
#   the same without diff_m
# - "distill_loras": lightx2v/Wan2.1-Distill-Loras wan2.1_i2v_lora_rank64_lightx2v_4step: the head
#   as a full delta (head.head.diff + .diff_b) instead of a low-rank pair, no diff_m
# All bf16, prefix diffusion_model., no .alpha (scale 1).
DISTILL_FORMS = ("lightx2v", "kijai", "distill_loras")
_LOW_RANK = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
             "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")
_NORMS = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
          "cross_attn.norm_k_img")
_OUTSIDE = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
            "time_projection.1", "img_emb.proj.1", "img_emb.proj.3")


def distill_lora(transformer, form: str, rank: int = RANK, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA for ``transformer`` (tiny diffusers Wan DiT) in one of ``DISTILL_FORMS``' key forms."""
    gen = torch.Generator().manual_seed(seed)
    wan = lw.wan_dit(transformer)
    out: dict[str, torch.Tensor] = {}

    def pair(module: str) -> None:
        w = wan[f"{module}.weight"]
        out[f"{PREFIX}{module}.lora_down.weight"] = _randn((rank, w.shape[1]), gen, 0.3 / rank ** 0.5)
        out[f"{PREFIX}{module}.lora_up.weight"] = _randn((w.shape[0], rank), gen, 0.3)
        out[f"{PREFIX}{module}.diff_b"] = _randn(wan[f"{module}.bias"].shape, gen, 0.05)

    def full(module: str, leaf: str = "weight", suffix: str = "diff") -> None:
        out[f"{PREFIX}{module}.{suffix}"] = _randn(wan[f"{module}.{leaf}"].shape, gen, 0.05)

    blocks = sorted({int(k.split(".")[1]) for k in wan if k.startswith("blocks.")})
    for n in blocks:
        for m in _LOW_RANK:
            pair(f"blocks.{n}.{m}")
        for m in _NORMS:
            full(f"blocks.{n}.{m}")
        full(f"blocks.{n}.norm3")
        full(f"blocks.{n}.norm3", "bias", "diff_b")
        if form == "lightx2v":
            out[f"{PREFIX}blocks.{n}.diff_m"] = _randn(wan[f"blocks.{n}.modulation"].shape, gen, 0.05)
    for m in _OUTSIDE:
        pair(m)
    if form == "distill_loras":
        full("head.head")
        full("head.head", "bias", "diff_b")
    else:
        pair("head.head")
    if form == "lightx2v":
        out[f"{PREFIX}head.diff_m"] = _randn(wan["head.modulation"].shape, gen, 0.05)
    return {k: v.to(torch.bfloat16) for k, v in out.items()}
