"""A GPU that is not there: tensors on ``cuda`` are fake (shape, dtype, device, no storage).

``FakeCard`` enters ``FakeTensorMode`` (works on a machine without CUDA), counts the bytes alive on
each device op by op with torch's ``MemTracker`` (its per-module statistics are skipped: the DiT
runs many times per video) and the FLOPs with ``FlopCounterMode``, phase by phase. With no device
to ask, torch's ``scaled_dot_product_attention`` would fall back to the math kernel (heads x
tokens^2 alive); the card routes it through the fused kernel a GPU runs instead (``ATTENTION``).

What this cannot see: the CUDA context, cuBLAS/attention workspaces and the caching allocator's
rounding and fragmentation (plan.py keeps a margin for them; docs/memory.md).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
# kernel name -> the aten op with a fake-tensor implementation that the card runs
ATTENTION = {"flash": "aten._scaled_dot_product_flash_attention",
             "efficient": "aten._scaled_dot_product_efficient_attention"}


@dataclass
class Measure:
    """One phase on the simulated card."""

    peak_bytes: int = 0
    weight_bytes: int = 0          # parameters and buffers on the card at that peak
    flops: int = 0


class DeviceBytes(MemTracker):
    """MemTracker's storage accounting per device, peaks reset per phase; no per-module stats."""

    def __init__(self, weights: Callable[[], int]) -> None:
        super().__init__()
        self.weights = weights
        self.peak = 0
        self.weight_at_peak = 0
        self.high = 0              # the highest count since it was last set (replay.py)

    def _pre_fw_hook(self, module, inputs) -> None:   # per-module statistics: not needed
        return None

    def _post_fw_hook(self, module, inputs, outputs) -> None:
        return None

    def now(self) -> int:
        return sum(s["Total"] for d, s in self._curr_mem_snap.items() if d.type == "cuda")

    def reset(self) -> None:
        self.peak, self.weight_at_peak = self.now(), self.weights()

    def _update_peak_stats(self, peak_state) -> None:
        self.bump(self.now())

    def bump(self, now: int) -> None:
        """The count reached ``now`` bytes (an op's result, or a replayed call's peak)."""
        self.high = max(self.high, now)
        if now > self.peak:
            self.peak, self.weight_at_peak = now, self.weights()


USED: set[str] = set()


def _flash(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if attn_mask is not None:     # a mask (umT5's position bias): the card's dispatcher picks efficient
        return _efficient(query, key, value, attn_mask, dropout_p, is_causal, scale)
    USED.add("flash")
    return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                              False, scale=scale)[0]


def _efficient(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    USED.add("efficient")
    if attn_mask is not None:
        attn_mask = attn_mask.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, False,
                                                                  dropout_p, is_causal, scale=scale)[0]


KERNELS = {"flash": _flash, "efficient": _efficient}


@contextlib.contextmanager
def routed_attention(kernel: str) -> Iterator[None]:
    """``F.scaled_dot_product_attention`` as the fused ``kernel`` (what the card's dispatcher picks)."""
    saved = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = KERNELS[kernel]
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = saved


@dataclass
class FakeCard:
    """The simulated card; ``phase(name)`` measures one phase (peak, weights at peak, FLOPs)."""

    weights: Callable[[], int] = lambda: 0
    attention: str = "flash"
    phases: dict[str, Measure] = field(default_factory=dict)
    mode: object = None
    tracker: DeviceBytes | None = None
    flops: FlopCounterMode | None = None      # the phase running's counter

    @contextlib.contextmanager
    def running(self) -> Iterator["FakeCard"]:
        from torch._subclasses.fake_tensor import FakeTensorMode

        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.tracker = DeviceBytes(lambda: self.weights())
        with self.mode, routed_attention(self.attention), self.tracker:
            yield self

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        measure = self.phases.setdefault(name, Measure())
        self.tracker.reset()
        with FlopCounterMode(display=False) as flops:
            self.flops = flops
            try:
                yield
            finally:
                self.flops = None
        measure.peak_bytes = max(measure.peak_bytes, self.tracker.peak)
        measure.weight_bytes = max(measure.weight_bytes, self.tracker.weight_at_peak)
        measure.flops += flops.get_total_flops()
        log.info("simulated phase %s: peak %.2f GiB (weights %.2f GiB), %.3g FLOPs", name,
                 self.tracker.peak / 2**30, self.tracker.weight_at_peak / 2**30, measure.flops)


def move(module: torch.nn.Module, device: torch.device, recurse: bool = True) -> None:
    """``module.to(device)`` for fake tensors (nn.Module.to cannot swap them): each parameter and
    buffer replaced by its copy on ``device``; shared tensors (umT5's tied embedding) stay shared."""
    done: dict[int, torch.Tensor] = {}
    for sub in module.modules() if recurse else (module,):
        for store in (sub._parameters, sub._buffers):
            for name, t in list(store.items()):
                if t is None or t.device == device:
                    continue
                if id(t) not in done:
                    moved = t.detach().to(device)
                    done[id(t)] = torch.nn.Parameter(moved, requires_grad=False) \
                        if isinstance(t, torch.nn.Parameter) else moved
                    if hasattr(t, "quant_type"):      # GGUF: the copy stays a quantised weight
                        from .gguf_fake import tag
                        tag(done[id(t)], t.quant_type)
                store[name] = done[id(t)]


def bytes_on(modules, device_type: str = "cuda") -> int:
    """Bytes of the parameters and buffers of ``modules`` on ``device_type`` (each tensor once)."""
    return WeightSlots(modules).bytes_on(device_type)


class WeightSlots:
    """Every parameter and buffer slot of ``modules``, listed once: the card's weight count is asked
    at every new peak (thousands of times a video), and walking the module tree each time took a
    third of a simulation. ``move`` replaces tensors in these same slots, so the list stays true."""

    def __init__(self, modules) -> None:
        self.slots = [(store, name) for module in modules for sub in module.modules()
                      for store in (sub._parameters, sub._buffers) for name in store]

    def bytes_on(self, device_type: str = "cuda") -> int:
        seen: dict[int, int] = {}
        for store, name in self.slots:
            t = store[name]
            if t is not None and t.device.type == device_type:
                seen[id(t)] = t.numel() * t.element_size()
        return sum(seen.values())
