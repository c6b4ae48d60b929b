"""The nodes' input checks: each declared input's own rule, then the engine's rules (wan_engine/rules.py).

How ComfyUI 0.3.75 runs a V3 ``validate_inputs`` (execution.py ``validate_inputs``):
- with ``**kwargs`` in the signature it passes every input the prompt gives (links as ``None``, as is
  a JSON null) and skips its own min/max checks; it never checks COMBO values of V3 nodes;
- with ``input_types`` in the signature it also passes the linked inputs' types, and skips its own
  link type check: ``given_values`` does that check, so a null is told apart from a link;
- a returned string is appended once per argument passed (15 identical errors for the sampler, each
  marking a different input); an exception is reported once, with its message as ``details``
  ("Exception when validating (inner) node: width = 4096: ..."). So the nodes raise ``InvalidInput``.
The same checks run again in ``execute`` (``checked``), where linked values have arrived.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

from ..wan_engine import rules
from ..wan_engine.errors import InvalidInput

log = logging.getLogger(__name__)
_warned: set[str] = set()


def given_values(node_cls, values: dict, input_types: dict | None) -> dict:
    """The values typed into the prompt: links left out once their type is checked as ComfyUI does."""
    if not input_types:
        return dict(values)
    from comfy_execution.graph import get_input_info
    from comfy_execution.validation import validate_node_input

    for name, received in input_types.items():
        expected = get_input_info(node_cls, name)[0]
        if expected is not None and not validate_node_input(received, expected):
            raise InvalidInput(f"is linked to an output of type {received}", field=name, value=received,
                               fix=f"connect an output of type {expected}")
    return {k: v for k, v in values.items() if k not in input_types}


def check_schema(node_cls, values: dict) -> None:
    """Every input in ``values`` (none linked) against its declared type, range and choices."""
    for inp in node_cls.define_schema().inputs:
        if inp.id in values:
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
    """Run the node's ``validate_inputs`` on the values ``execute`` receives (links resolved, so
    ``input_types`` is left out and every value is checked)."""
    @functools.wraps(execute)
    def run(cls, **values):
        cls.validate_inputs(**values)
        return execute(cls, **values)
    return run


def warn_once(message: str) -> None:
    """Log ``message`` the first time only: the dropdowns are rebuilt on every /object_info."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
