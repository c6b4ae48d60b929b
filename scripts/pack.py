"""Import the pack's ComfyUI layer (``nodes/``) in-process, the way ComfyUI does: as a package.

ComfyUI loads the pack folder as a package, so ``nodes/`` reaches the engine relatively
(``from ..wan_engine ...``). Tests and benches import the engine top-level (``wan_engine``);
``pack_module("nodes.memory")`` imports the node module inside a package named ``PACKAGE`` whose
``wan_engine`` IS the top-level one, so both share one engine (one resident set, one index).
The pack's own ``__init__.py`` is not run (it registers routes with a live server).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "comfyui_wanvolume"
_ENGINE = f"{PACKAGE}.wan_engine"


class _SharedEngine(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``comfyui_wanvolume.wan_engine[.x]`` -> the already importable ``wan_engine[.x]``."""

    def find_spec(self, name, path=None, target=None):
        if name == _ENGINE or name.startswith(_ENGINE + "."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(spec.name[len(PACKAGE) + 1:])

    def exec_module(self, module):
        pass


def pack_module(name: str) -> types.ModuleType:
    """The pack's module ``name`` (e.g. ``"nodes.memory"``), sharing the top-level engine."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if PACKAGE not in sys.modules:
        if not any(isinstance(f, _SharedEngine) for f in sys.meta_path):
            sys.meta_path.insert(0, _SharedEngine())
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACKAGE] = pkg
    if importlib.util.find_spec("comfy_api") is None:   # the nodes import ComfyUI's comfy_api
        from comfy_headless import import_comfyui

        import_comfyui()
    return importlib.import_module(f"{PACKAGE}.{name}")
