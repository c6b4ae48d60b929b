"""The nodes' input checks: each declared input's own rule, then the engine's rules (engine/rules.py).

How ComfyUI 0.3.75 runs a V3 ``validate_inputs`` (execution.py ``validate_inputs``):
- with ``**kwargs`` in the signature it passes every input the prompt gives (links as ``None``), and
  skips its own min/max checks; it never checks COMBO values of V3 nodes;
- a returned string is appended once per argument passed (15 identical errors for the sampler, each
  marking a different input); an exception is reported once, with its message as ``details``
  ("Exception when validating (inner) node: width = 4096: ..."). So the nodes raise ``InvalidInput``.
The same checks run again in ``execute`` (``checked``), where linked values have arrived.
"""
from __future__ import annotations

import functools
from typing import Callable

from .engine import rules

def given(value: object) -> bool:
    """False for a linked input: ``None`` at /prompt time (its value is known only in execute)."""
    return value is not None and not isinstance(value, list)


def check_schema(node_cls, values: dict) -> None:
    """Every widget input in ``values`` against its declared type, range and choices."""
    for inp in node_cls.define_schema().inputs:
        if inp.id in values and given(values[inp.id]):
            check_input(inp, values[inp.id])


def check_input(inp, value: object) -> None:
    kind = str(inp.get_io_type())
    if kind in ("INT", "FLOAT"):
        rules.number(inp.id, value, lo=inp.min, hi=inp.max, integer=kind == "INT", example=inp.default)
    elif kind == "COMBO":
        rules.choice(inp.id, value, list(inp.options))
    elif kind == "STRING":
        rules.text(inp.id, value)
    elif kind == "BOOLEAN":
        rules.flag(inp.id, value)


def checked(execute: Callable) -> Callable:
    """Run the node's ``validate_inputs`` on the values ``execute`` receives (links resolved)."""
    @functools.wraps(execute)
    def run(cls, **values):
        cls.validate_inputs(**values)
        return execute(cls, **values)
    return run
