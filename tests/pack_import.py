"""The repo imported as the package ComfyUI imports (``nodes/`` reaches the engine relatively).

``pack("nodes.memory")`` gives the module as ComfyUI would load it; the engine modules it uses are
``pack("wan_engine...")`` (not the top-level ``wan_engine`` the engine tests import: their
resident-set state is separate). The package's ``__init__`` is not run (no routes, no prefetch).
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import types

from helpers import REPO, tiny_request

PACK = "wanvolume_pack"


def pack(module: str):
    if PACK not in sys.modules:
        root = types.ModuleType(PACK)
        root.__path__ = [str(REPO)]
        sys.modules[PACK] = root
    return importlib.import_module(f"{PACK}.{module}")


def pack_request(**over):
    """helpers.tiny_request() as the pack's own SampleRequest (its TileSettings class)."""
    sampling, decode = pack("wan_engine.sample.sampling"), pack("wan_engine.sample.decode")
    values = dataclasses.asdict(tiny_request(**over))
    values["tiles"] = decode.TileSettings(**values["tiles"])
    return sampling.SampleRequest(**values)
