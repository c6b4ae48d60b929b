"""LoRAs on Wan2.2's two experts: each expert has its own adapters and its own LoRA state.

A LoRA use names its expert (``LoraUse.expert``): ``both`` (one file to each expert, the usual way
a Wan2.1 LoRA such as the kissing LoRA is applied to Wan2.2), ``high`` or ``low`` (a pair such as
the Lightning LoRAs: one node per file). Each expert is seen through an ``ExpertView``: a
``LoadedPipeline`` whose ``pipe.transformer`` is that expert, with its own ``LoraState``, so
apply.py's whole machinery (peft adapters, weight patches, fusing, reports) runs per expert. The
peft part goes in as diffusers does it: ``load_lora_weights(..., load_into_transformer_2=True)``
for the low-noise expert. A Wan2.1 LoRA's CLIP-branch keys have no target in an expert and are
reported as such (formats.py ``no_target``), not as a mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .. import rules
from ..errors import InvalidInput
from ..load.assemble import LoadedPipeline
from . import apply
from .formats import LoraReport

EXPERT_CHOICES = ("both", "high", "low")
EXPERT_HELP = {"both": "the same file on both experts (a Wan2.1 LoRA such as the kissing LoRA on Wan2.2)",
               "high": "only the high-noise expert (the high file of a pair, e.g. Lightning high_noise_model)",
               "low": "only the low-noise expert (the low file of a pair)"}
TARGETS = {"both": ("transformer", "transformer_2"), "high": ("transformer",), "low": ("transformer_2",)}
ROLE = {"transformer": "high", "transformer_2": "low"}


class ExpertPipe:
    """The pipeline as one expert's LoRA code sees it: ``transformer`` is that expert."""

    def __init__(self, pipe, expert: str) -> None:
        self._pipe, self._expert = pipe, expert

    @property
    def transformer(self):
        return getattr(self._pipe, self._expert)

    transformer_2 = None

    def load_lora_weights(self, weights: dict, adapter_name: str) -> None:
        self._pipe.load_lora_weights(weights, adapter_name=adapter_name,
                                     load_into_transformer_2=self._expert == "transformer_2")

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.transformer.set_adapters(names, weights=adapter_weights)

    def enable_lora(self) -> None:
        self.transformer.enable_lora()

    def disable_lora(self) -> None:
        self.transformer.disable_lora()

    def delete_adapters(self, name: str) -> None:
        self.transformer.delete_adapters(name)

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)


@dataclass
class ExpertLoras:
    """The LoRA state of a two-expert pipeline (``LoadedPipeline.lora``): one view per expert."""

    views: dict[str, LoadedPipeline]


def check_expert(expert: object, two_experts: bool) -> str:
    rules.choice("expert", expert, list(EXPERT_CHOICES))
    if expert != "both" and not two_experts:
        raise InvalidInput("picks one expert of a Wan2.2 set, but the model set is a Wan2.1 set with one DiT",
                           field="expert", value=expert, fix="use both for a Wan2.1 set", suggested=("both",))
    return str(expert)


def views_of(loaded: LoadedPipeline) -> dict[str, LoadedPipeline]:
    """Each expert's view of ``loaded`` (made once; they share its lock and placement)."""
    if not isinstance(loaded.lora, ExpertLoras):
        loaded.lora = ExpertLoras({e: replace(loaded, pipe=ExpertPipe(loaded.pipe, e), lora=None, lock=loaded.lock)
                                   for e in ROLE})
    return loaded.lora.views


def ensure(loaded: LoadedPipeline, path: str | Path, expert: str = "both") -> dict[str, LoraReport]:
    """Load the file into the chosen experts once; their match reports by role ("high"/"low")."""
    views = views_of(loaded)
    out = {}
    for name in TARGETS[expert]:
        apply.ensure_adapter(views[name], path)
        out[ROLE[name]] = apply.report_for(views[name], path)
    return out


def activate(loaded: LoadedPipeline, uses: tuple[apply.LoraUse, ...], fuse: bool | None = None) -> None:
    """Apply exactly ``uses`` to each expert (its own files and strengths); the rest switched off."""
    with loaded.lock:
        for name, view in views_of(loaded).items():
            mine = tuple(u for u in uses if name in TARGETS[u.expert])
            apply.activate(view, mine, fuse if fuse is not None else any(u.fuse for u in uses))
