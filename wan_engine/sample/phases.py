"""The phases of one video and what each one uses, so callers can act around each phase.

``sample()`` enters ``phase(name)`` around each of its phases. The ComfyUI layer uses this to bring
to the GPU only what a phase uses (the memory plan) and to time each phase (the run report); the
engine itself does nothing there, so the default is a no-op.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

# phase -> the pipeline components it runs (names as WanImageToVideoPipeline's attributes)
COMPONENTS: dict[str, tuple[str, ...]] = {
    "text_encode": ("text_encoder",),
    "image_encode": ("image_encoder", "vae"),   # CLIP-H embeds the photo; the VAE encodes the start frame
    "sample": ("transformer",),
    "decode": ("vae",),
}
PHASES: tuple[str, ...] = tuple(COMPONENTS)

PhaseHook = Callable[[str], ContextManager[None]]


def no_phase(name: str) -> ContextManager[None]:
    """The default hook: nothing happens around a phase."""
    return contextlib.nullcontext()


def compose(*hooks: PhaseHook) -> PhaseHook:
    """One hook that enters ``hooks`` in order around a phase (and leaves them in reverse)."""
    @contextlib.contextmanager
    def phase(name: str):
        with contextlib.ExitStack() as stack:
            for hook in hooks:
                stack.enter_context(hook(name))
            yield
    return phase
