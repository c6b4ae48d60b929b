"""sample() enters each phase hook once, in order, around the work of that phase."""
from __future__ import annotations

import contextlib

import numpy as np
from PIL import Image

from helpers import tiny_request
from wan_engine.sample import phases, sampling


def test_phases_in_order_each_around_its_components(loaded):
    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    events: list[tuple[str, str]] = []
    ran: dict[str, list[str]] = {}
    hooks = []
    current = []

    @contextlib.contextmanager
    def hook(name: str):
        events.append(("enter", name))
        current.append(name)
        try:
            yield
        finally:
            current.pop()
            events.append(("exit", name))

    for comp in ("text_encoder", "image_encoder", "transformer", "vae"):
        module = getattr(loaded.pipe, comp)
        hooks.append(module.register_forward_pre_hook(
            lambda m, a, comp=comp: ran.setdefault(comp, []).append(current[-1] if current else "-")))
        if comp == "vae":   # the VAE runs through encode()/decode(), not forward()
            for fn in ("encode", "decode"):
                real = getattr(module, fn)
                def spy(*a, _real=real, **k):
                    ran.setdefault("vae", []).append(current[-1] if current else "-")
                    return _real(*a, **k)
                setattr(module, fn, spy)
    try:
        sampling.sample(loaded, image, tiny_request(), phase=phases.compose(hook))
    finally:
        for h in hooks:
            h.remove()
        for fn in ("encode", "decode"):
            loaded.pipe.vae.__dict__.pop(fn, None)
    assert [e for e in events if e[0] == "enter"] == [("enter", p) for p in phases.PHASES]
    assert events == [x for p in phases.PHASES for x in (("enter", p), ("exit", p))]   # not nested
    for comp, where in ran.items():
        allowed = {p for p, comps in phases.COMPONENTS.items() if comp in comps}
        assert set(where) <= allowed, (comp, where)
    assert set(ran) == {"text_encoder", "image_encoder", "transformer", "vae"}
    assert set(ran["vae"]) == {"image_encode", "decode"}
