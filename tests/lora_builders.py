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
