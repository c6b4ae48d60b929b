"""The tiny Wan2.2 volume: one two-expert set in every layout, built once per source version."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = (REPO / "wan_engine" / "tiny_wan22.py", REPO / "tests" / "wan22_writers.py")
DIFFUSERS_NAME = "Wan2.2-I2V-tiny-Diffusers"
# layout -> the folder (below the cache) that is a models dir holding only that layout
LAYOUT_DIRS = ("diffusers", "original", "comfy", "split", "kijai", "gguf")


def _cache() -> Path:
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES)).hexdigest()[:12]
    return REPO / ".cache" / f"tiny-wan22-{digest}"


def build(dest: Path) -> None:
    import wan22_writers as w

    comps = w.components()
    w.write_wan22_diffusers(dest / "diffusers" / DIFFUSERS_NAME, comps)
    w.write_wan22_original(dest / "original", comps)
    for style in w.COMFY_STYLES:
        w.write_wan22_comfy(dest / style, comps, style)


@pytest.fixture(scope="session")
def wan22_volumes() -> Path:
    """``<cache>/<layout>/``: a models dir per layout, read-only (copy before changing it)."""
    cache = _cache()
    if not (cache / "done").is_file():
        tmp = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        (tmp / "done").write_text("ok")
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    return cache


@pytest.fixture(scope="session")
def wan22_components(wan22_volumes: Path):
    """The same components in memory (what diffusers' reference pipeline runs), read back from the
    volume's diffusers layout: the cached volume may have been written under another diffusers
    version, whose random initialisation (and so a set rebuilt from the seed) differs."""
    import torch
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(wan22_volumes / "diffusers" / DIFFUSERS_NAME,
                                                   torch_dtype=torch.float32)
    return dict(pipe.components)
