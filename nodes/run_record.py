"""The run report's record of the prompt now executing, shared by the loader, sampler and video nodes.

The nodes run one after another and ComfyUI's IMAGE link carries a bare tensor (no attributes), so
the measurements travel by ComfyUI's prompt id, read from the execution context every node runs
in: it survives nodes placed between the sampler and Video Combine (an upscaler makes a new
tensor, so a record keyed by the frames tensor would be lost), needs no extra socket in the
workflows, and a cached node simply adds nothing (a prompt that reuses the loaded set reports the
reuse, measured in the sampler).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from ..wan_engine.report import RunRecord

_KEEP = 4   # ComfyUI runs one prompt at a time; a few spare records cover failed prompts, then go
_records: "OrderedDict[str, RunRecord]" = OrderedDict()
_lock = threading.Lock()


def prompt_id() -> str | None:
    """ComfyUI's id of the prompt whose node is executing (None outside an execution)."""
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    return context.prompt_id if context is not None else None


def current() -> RunRecord:
    """The record of the executing prompt, started by the first node that asks for it.

    Records of older prompts are dropped, so nothing measured in one prompt reaches the next."""
    key = prompt_id()
    with _lock:
        record = _records.get(key) if key is not None else None
        if record is None:
            record = RunRecord(key)
            if key is not None:
                _records[key] = record
            while len(_records) > _KEEP:
                _records.popitem(last=False)
        return record
