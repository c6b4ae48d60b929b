"""Identical calls replayed: the simulation's shortcut for work it has already measured.

A video runs the same module on the same shapes again and again: each of the DiT's 40 blocks
twice a step, the VAE's decoder once per latent frame of every tile. On fake tensors each call
costs the same CPU however often it repeats, so a full-size simulation spent minutes re-running
identical calls. ``Replay`` runs the first call of each kind for real (on the fakes, measured) and
answers a later call whose inputs, weights and caches have the same shapes, dtypes and devices from
the record: the card's peak rises by the first call's peak over its start, its FLOPs are counted
again, and its outputs (and the decoder's feature cache entries it replaced) come back as new
fakes of the recorded shapes, so the bytes alive afterwards are what the real call leaves.

It is exact where a call's memory depends only on those shapes (no data-dependent branches: fake
tensors have no data to branch on, so a real run of these modules could not differ either). A call
whose output shares storage with an input is never replayed. ``simulate(..., replay=False)`` runs
every call; tests/test_simulate.py checks both give the same peaks and FLOPs.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch


def _signature(value: Any) -> Any:
    """What a call's memory depends on: tensors by shape, stride, dtype and device."""
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.stride(), value.dtype, value.device)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return ("D", tuple((k, _signature(v)) for k, v in sorted(value.items())))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return ("O", type(value).__name__)


def _fresh(sig: Any) -> Any:
    """A new fake with ``sig``'s layout (the bytes a real call would have allocated)."""
    if isinstance(sig, tuple) and sig and sig[0] == "T":
        _, shape, stride, dtype, device = sig
        return torch.empty_strided(shape, stride, dtype=dtype, device=device)
    if isinstance(sig, tuple) and sig and sig[0] in ("list", "tuple"):
        items = [_fresh(s) for s in sig[1]]
        return items if sig[0] == "list" else tuple(items)
    return sig


def _storages(value: Any) -> set[int]:
    out: set[int] = set()
    if isinstance(value, torch.Tensor):
        out.add(id(value.untyped_storage()))
    elif isinstance(value, (list, tuple)):
        for v in value:
            out |= _storages(v)
    elif isinstance(value, dict):
        for v in value.values():
            out |= _storages(v)
    return out


@dataclass
class Record:
    """One measured call: its transient peak over its start, FLOPs by op, what it returned and
    what it left in its mutable list arguments (index -> signature; ``int`` entries for counters)."""

    rise: int
    flops: Counter
    output: Any
    lists: dict[int, dict[int, Any]]


SAME = object()         # a list entry the call left as it was


class Replay:
    """Wraps ``forward`` of the given modules; ``card`` supplies the byte tracker and the FLOP
    counter of the phase running (``FakeCard.tracker`` / ``FakeCard.flops``)."""

    def __init__(self, card) -> None:
        self.card = card
        self.records: dict[Any, Record] = {}
        self.calls = Counter()          # "measured" / "replayed"

    def install(self, modules) -> None:
        for module in modules:
            module.forward = self._wrap(module, module.forward)

    def _wrap(self, module: torch.nn.Module, forward):
        def call(*args, **kwargs):
            # the module's tensors now: the placement swaps them between devices between calls
            key = (type(module).__name__, _signature(args), _signature(kwargs),
                   tuple((t.dtype, t.device) for t in (*module.parameters(), *module.buffers())))
            record = self.records.get(key)
            if record is None:
                return self._measure(key, forward, args, kwargs)
            return self._replay(record, args, kwargs)
        return call

    def _measure(self, key, forward, args, kwargs):
        tracker, counter = self.card.tracker, self.card.flops
        lists = _mutable_lists(args, kwargs)
        held = {i: [id(v) for v in lst] for i, lst in lists.items()}
        start, before = tracker.now(), Counter(counter.flop_counts["Global"]) if counter else Counter()
        tracker.high = start
        out = forward(*args, **kwargs)
        self.calls["measured"] += 1
        after = Counter(counter.flop_counts["Global"]) if counter else Counter()
        if _storages(out) & _storages((args, kwargs)):
            return out                                   # aliases an input: never replayed
        self.records[key] = Record(rise=tracker.high - start, flops=after - before,
                                   output=_signature(out),
                                   lists={i: {j: SAME if id(v) == held[i][j] else _signature(v)
                                              for j, v in enumerate(lst)} for i, lst in lists.items()})
        return out

    def _replay(self, record: Record, args, kwargs):
        tracker, counter = self.card.tracker, self.card.flops
        tracker.bump(tracker.now() + record.rise)
        if counter is not None:
            total = counter.flop_counts["Global"]
            for op, n in record.flops.items():
                total[op] = total.get(op, 0) + n
        for i, lst in _mutable_lists(args, kwargs).items():
            left = record.lists[i]
            changed = [j for j, sig in left.items() if sig is not SAME]
            for j in changed:
                lst[j] = None                            # the old entry goes first, as in the call
            for j in changed:
                lst[j] = _fresh(left[j])
        self.calls["replayed"] += 1
        return _fresh(record.output)


def _mutable_lists(args, kwargs) -> dict[int, list]:
    """The list arguments a call may change in place (the VAE's feature cache and its index)."""
    values = list(args) + [kwargs[k] for k in sorted(kwargs)]
    return {i: v for i, v in enumerate(values) if isinstance(v, list)}
