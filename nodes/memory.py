"""Let ComfyUI's "unload models" (the Free-memory button, POST /free) release our resident set.

The pipeline lives outside ComfyUI's model management, which otherwise would not know to free
it. ComfyUI's queue worker calls ``comfy.model_management.unload_all_models()`` for that request;
we wrap it once so the resident Wan pipeline is released too.
"""
from __future__ import annotations

import logging

from .engine import assemble

log = logging.getLogger(__name__)


def install() -> None:
    import comfy.model_management as mm

    original = mm.unload_all_models
    if getattr(original, "_wanvolume_wrapped", False):
        return

    def unload_all_models(*args, **kwargs):
        assemble.release()
        return original(*args, **kwargs)

    unload_all_models._wanvolume_wrapped = True
    mm.unload_all_models = unload_all_models
