"""LoRA parts that peft cannot carry, applied as weight patches with ComfyUI's semantics.

A patch is a delta on one parameter of the DiT at strength 1: a full delta (``.diff``,
``.diff_b``, ``.diff_m``, ``.w_norm``/``.b_norm``), a low-rank delta on a layer peft does not
adapt (a conv, a norm) or on a peft layer while fused (state.py), or a DoRA delta
(``dora_scale``, computed as ComfyUI's ``weight_decompose``: ``W + s * (W_dora - W)``, linear in
the strength s). Every touched parameter keeps a copy of its original value W0 (on the CPU, in
its storage dtype); whenever strengths change it is set to ``W0 + sum(s_i * delta_i)`` computed
in float32 on the parameter's device, and to W0 itself (bit-exact) when no patch on it has a
non-zero strength. A backup no patch refers to any more is dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class Patch:
    """A delta for one parameter (diffusers path, e.g. ``blocks.0.norm2.weight``)."""

    param: str
    diff: torch.Tensor | None = None         # full delta
    down: torch.Tensor | None = None         # low-rank delta: scale * up @ down
    up: torch.Tensor | None = None
    scale: float = 1.0                       # alpha / rank
    dora_scale: torch.Tensor | None = None   # DoRA magnitude (ComfyUI semantics)

    def delta(self, w0: torch.Tensor) -> torch.Tensor:
        """The float32 delta at strength 1, shaped like ``w0``."""
        f32 = dict(device=w0.device, dtype=torch.float32)
        if self.diff is not None:
            return self.diff.to(**f32).reshape(w0.shape)
        lowrank = (self.up.to(**f32).flatten(1) @ self.down.to(**f32).flatten(1)).reshape(w0.shape)
        if self.dora_scale is None:
            return self.scale * lowrank
        return _dora_delta(w0.float(), lowrank * self.scale, self.dora_scale.to(**f32))


def _dora_delta(w0: torch.Tensor, lora_diff: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``weight_decompose`` at strength 1, minus W0 (in float32, as ComfyUI patches)."""
    calc = w0 + lora_diff
    on_output = dora_scale.shape[0] == calc.shape[0]
    if dora_scale.dim() < calc.dim():   # a 1-D magnitude vector (peft's form)
        lead = (calc.shape[0], 1) if on_output else (1, calc.shape[1])
        dora_scale = dora_scale.reshape(*lead, *[1] * (calc.dim() - 2))
    if on_output:   # magnitude on the output axis (ComfyUI: norm of W0)
        norm = w0.reshape(w0.shape[0], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(w0.shape[0], *[1] * (w0.dim() - 1))
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1)
    norm = norm + torch.finfo(torch.float32).eps
    return calc * (dora_scale / norm) - w0


def find_parameter(module: torch.nn.Module, name: str,
                   modules: dict[str, torch.nn.Module] | None = None) -> torch.nn.Parameter | None:
    """``module``'s parameter ``name``, also when peft wrapped its layer (``.base_layer.``).

    ``modules`` (``dict(module.named_modules())``) saves the walk when called in a loop.
    """
    modules = dict(module.named_modules()) if modules is None else modules
    owner, _, leaf = name.rpartition(".")
    for path in (owner, f"{owner}.base_layer" if owner else "base_layer"):
        found = getattr(modules.get(path), leaf, None)
        if isinstance(found, torch.Tensor):
            return found
    return None


class WeightPatcher:
    """The patches of every loaded adapter on one module, and the originals they replace."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.patches: dict[str, list[Patch]] = {}       # adapter -> patches
        self.backup: dict[str, torch.Tensor] = {}       # param -> original value
        self.applied: dict[str, float] = {}             # adapter -> strength in the weights now
        self._modules: dict[str, torch.nn.Module] | None = None   # path -> module, while unchanged
        self._by_param: dict[str, dict[str, list[Patch]]] = {}   # adapter -> param -> patches

    def _param(self, name: str) -> torch.nn.Parameter:
        if self._modules is None:
            self._modules = dict(self.module.named_modules())
        return find_parameter(self.module, name, self._modules)

    def add(self, adapter: str, patches: list[Patch]) -> None:
        self._modules = None    # peft may have wrapped layers since
        for p in patches:
            if p.param not in self.backup:   # kept on the CPU: no VRAM for originals
                self.backup[p.param] = self._param(p.param).detach().to("cpu", copy=True)
        self.patches[adapter] = list(patches)
        self._by_param.pop(adapter, None)

    def backup_bytes(self) -> int:
        """RAM held by the backups of the original values."""
        return sum(t.nbytes for t in self.backup.values())

    def remove(self, adapter: str) -> None:
        """Forget an adapter: its params go back to what the rest give; unused backups go."""
        if adapter not in self.patches:
            return
        self._modules = None
        self.apply({a: s for a, s in self.applied.items() if a != adapter})
        mine = set(self.params_of(adapter))
        for table in (self.patches, self.applied, self._by_param):
            table.pop(adapter, None)
        still = set().union(*[set(self.params_of(a)) for a in self.patches])
        for name in mine - still:
            del self.backup[name]

    def params_of(self, adapter: str) -> dict[str, list[Patch]]:
        """The adapter's patches by parameter name."""
        if adapter not in self._by_param:
            by: dict[str, list[Patch]] = {}
            for p in self.patches.get(adapter, ()):
                by.setdefault(p.param, []).append(p)
            self._by_param[adapter] = by
        return self._by_param[adapter]

    def changes(self, strengths: dict[str, float]) -> set[str]:
        """The parameters ``apply(strengths)`` would set."""
        changed = [a for a in self.patches if strengths.get(a, 0.0) != self.applied.get(a, 0.0)]
        return set().union(*[set(self.params_of(a)) for a in changed])

    @torch.no_grad()
    def apply(self, strengths: dict[str, float]) -> int:
        """Set every patched parameter for ``strengths`` (adapter -> strength); returns how many."""
        want = {a: float(strengths.get(a, 0.0)) for a in self.patches}
        todo = self.changes(want)
        for name in todo:
            self._set(name, {a: w for a, w in want.items() if w != 0.0 and name in self.params_of(a)})
        self.applied = want
        return len(todo)

    def _set(self, name: str, strengths: dict[str, float]) -> None:
        param = self._param(name)
        w0 = self.backup[name]
        terms = [(s, p) for a, s in strengths.items() for p in self.params_of(a)[name]]
        if not terms:
            param.data.copy_(w0)
            return
        base = w0.to(param.device, torch.float32)
        total = base.clone()
        for strength, p in terms:
            total += strength * p.delta(base)
        param.data.copy_(total.to(param.dtype))
