"""The one owner of a resident pipeline's LoRA state.

``LoraState`` alone knows which LoRA files are loaded (adapter name -> file), their match
reports, which adapters have a peft part, their weight patches, what is applied now and whether
the peft part is fused. It lives on ``LoadedPipeline.lora`` (made by ``state_of``), so it goes
away with the pipeline it describes; apply.py works through it.

Fusing is done here, not by peft: each adapted Linear weight is backed up (on the CPU, as
ComfyUI's ModelPatcher backs up what it patches) and set to ``W0 + sum(s * scale * B @ A)``
computed in float32; unfusing restores the backup, so any history of strengths and fuse switches
ends, at strength 0, on the base weights bit for bit (peft's unmerge subtracts in the storage
dtype and drifts in bf16). The backups exist only while fused and cost one copy of every fused
weight in its storage dtype (about 2 bytes per parameter of the adapted layers in bf16).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..load.assemble import LoadedPipeline
from .formats import LoraReport
from .patches import Patch, WeightPatcher

log = logging.getLogger(__name__)

FUSED = "/fused"   # suffix of the patcher key holding an adapter's peft pairs while fused


@dataclass
class LoraState:
    """What is loaded into, and applied to, one resident pipeline's DiT."""

    patcher: WeightPatcher
    files: dict[str, str] = field(default_factory=dict)           # adapter -> file path
    reports: dict[str, LoraReport] = field(default_factory=dict)  # adapter -> match report
    peft_layers: dict[str, set[str]] = field(default_factory=dict)  # adapter -> its peft layers
    key: tuple | None = None     # (active strengths, fused) applied now; None: re-apply
    fused: bool = False          # the active peft pairs are merged into the weights

    @property
    def peft(self) -> set[str]:
        """Adapters with a peft part."""
        return set(self.peft_layers)

    def add(self, name: str, path: str, report: LoraReport, patches: list[Patch],
            peft_layers: set[str] | None) -> None:
        """Record a loaded adapter; ``peft_layers`` is None when it has no peft part."""
        self.patcher.add(name, patches)
        if peft_layers is not None:
            self.peft_layers[name] = set(peft_layers)
        self.files[name] = path
        self.reports[name] = report
        self.key = None

    def names_of(self, path: str) -> list[str]:
        """Adapters loaded from ``path`` (an earlier version of a replaced file among them)."""
        return [n for n, p in self.files.items() if p == str(path)]

    def forget(self, name: str) -> None:
        """Drop an adapter's patches and records (the caller removes its peft part)."""
        self.patcher.remove(name + FUSED)
        self.patcher.remove(name)
        self.peft_layers.pop(name, None)
        self.files.pop(name, None)
        self.reports.pop(name, None)
        self.key = None

    def strengths(self, active: dict[str, float], fuse: bool) -> dict[str, float]:
        """Patcher strengths for ``active``: the patches, and the peft pairs when fused."""
        out = dict(active)
        if fuse:
            out.update({n + FUSED: w for n, w in active.items() if n in self.peft_layers})
        return out

    def prepare_fuse(self, transformer: torch.nn.Module, names: list[str]) -> None:
        """Register the peft pairs of ``names`` as patches (backing up their weights once)."""
        modules = dict(transformer.named_modules())
        before = self.patcher.backup_bytes()
        for name in names:
            if name + FUSED in self.patcher.patches:
                continue
            pairs = [_pair(modules[layer], layer, name) for layer in sorted(self.peft_layers[name])]
            self.patcher.add(name + FUSED, pairs)
        if self.patcher.backup_bytes() > before:   # the RAM fusing costs, said once per fuse
            log.info("fuse_lora: backed up %.2f GiB of weights to restore them exactly",
                     (self.patcher.backup_bytes() - before) / 2**30)

    def drop_fuse(self) -> None:
        """Forget the fused pairs and their backups (after the weights were restored)."""
        for key in [k for k in self.patcher.patches if k.endswith(FUSED)]:
            self.patcher.remove(key)


def _pair(module: torch.nn.Module, layer: str, name: str) -> Patch:
    """The adapter's low-rank pair on a peft layer as a patch; it shares peft's tensors.

    The scale is peft's at weight 1 (``scaling`` also holds the weight ``set_adapters`` gave)."""
    rank, alpha = module.r[name], module.lora_alpha[name]
    scale = alpha / math.sqrt(rank) if module.use_rslora.get(name, False) else alpha / rank
    return Patch(f"{layer}.weight", down=module.lora_A[name].weight.detach(),
                 up=module.lora_B[name].weight.detach(), scale=float(scale))


def state_of(loaded: LoadedPipeline) -> LoraState:
    """The LoRA state of a ``LoadedPipeline``, made on first use."""
    if loaded.lora is None:
        loaded.lora = LoraState(WeightPatcher(loaded.pipe.transformer))
    return loaded.lora
