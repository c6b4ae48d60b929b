"""Issue 24, items 5-8 without a server: odd images and odd files on the volume that must not take
the pack down (tests/test_hostile_server.py runs the same through a real ComfyUI server).

- a 1 x 4000 px strip fitted to 832 x 480 allocates nothing larger than the output (crop, then resize);
- a link loop (``models/models -> .``) is walked once; sets, LoRAs and the status document still read;
- a FIFO named ``x.safetensors`` is never opened (opening it would block until something writes);
- a dangling link named like a LoRA is left out of the LoRAs and the status document.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from helpers import TINY_DISTILL_LORA, TINY_LORA
from wan_engine import tiny_model
from wan_engine.sample import sampling
from wan_engine.store import find, headers, status, stfile


@pytest.fixture
def vol(tiny_volume_template: Path, tmp_path: Path, monkeypatch) -> Path:
    models = tmp_path / "models"
    shutil.copytree(tiny_volume_template, models)
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(models))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    find.clear_index()
    yield models
    find.clear_index()


@pytest.fixture
def resizes(monkeypatch) -> list[tuple[int, int]]:
    """Every size PIL is asked to resize to."""
    seen: list[tuple[int, int]] = []
    real = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        seen.append(tuple(size))
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return seen


@pytest.mark.parametrize("size", [(1, 4000), (4000, 1), (3, 20000)])
@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_strip_image_fits_in_output_sized_memory(size, fit, resizes):
    strip = Image.new("RGB", size, "red")
    out = sampling.fit_image(strip, 832, 480, fit)
    assert out.size == (832, 480)
    assert resizes and max(w * h for w, h in resizes) <= 832 * 480, resizes


def test_crop_keeps_the_centre():
    """Crop-then-resize shows the same region as resize-then-crop did: the photo's centre."""
    img = Image.new("RGB", (300, 100), "blue")
    img.paste(Image.new("RGB", (100, 100), "red"), (100, 0))      # a red centre square
    out = sampling.fit_image(img, 48, 48)
    assert out.getpixel((24, 24))[0] > 200 and out.getpixel((24, 24))[2] < 50
    wide = sampling.fit_image(img, 96, 32)                      # same aspect: nothing cut
    assert wide.getpixel((2, 16))[2] > 200 and wide.getpixel((48, 16))[0] > 200


def test_link_loop_is_walked_once(vol):
    os.symlink(".", vol / "models")
    os.symlink("..", vol / "loras" / "up")
    fp = find.fingerprint([vol])
    assert len(fp) < 60 and not any("models/models" in str(e[0]) for e in fp)
    assert find.complete_set_names() == [tiny_model.TINY_SET_NAME]
    assert sorted(lf.name for lf in find.find_loras()) == [TINY_DISTILL_LORA, TINY_LORA]
    doc = status.volume_status(vol)
    assert doc["ready"] and [s["name"] for s in doc["model_sets"]] == [tiny_model.TINY_SET_NAME]


def test_fifo_named_like_a_lora_is_never_opened(vol):
    fifo = vol / "loras" / "x.safetensors"
    os.mkfifo(fifo)
    done: list[object] = []

    def scan() -> None:
        done.append([lf.name for lf in find.find_loras()])
        done.append(status.volume_status(vol)["ready"])
        with pytest.raises(stfile.HeaderError, match="not a regular file"):
            stfile.read_header(fifo)
        done.append(headers.header_facts(fifo)[0])

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():                  # unblock the reader so the test process can end
        with open(fifo, "wb") as fh:
            fh.write(b"\0" * 8)
        worker.join(5)
        pytest.fail("reading the volume blocked on a FIFO")
    names, ready, problem = done
    assert "loras/x.safetensors" not in names and ready
    assert "FIFO" in problem


def test_dangling_link_named_like_a_lora(vol):
    os.symlink(vol / "loras" / "gone.safetensors", vol / "loras" / "dangling.safetensors")
    assert "loras/dangling.safetensors" not in [lf.name for lf in find.find_loras()]
    doc = status.volume_status(vol)
    assert doc["ready"] and all("dangling" not in lf["name"] for lf in doc["loras"])


def test_huge_lora_name_gives_a_bounded_message(vol):
    """A 10 MB LoRA name: the message quotes its start once, not the whole name twice."""
    from wan_engine.errors import ModelSetNotFound

    name = "loras/" + "a" * 10_000_000 + ".safetensors"
    with pytest.raises(ModelSetNotFound) as err:
        find.get_lora(name)
    text = str(err.value)
    assert text.startswith("lora = 'loras/aaa") and "Fix: " in text and len(text) < 20_000


def test_int_beyond_float_names_the_field():
    from wan_engine import rules
    from wan_engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"^width = 1000.*Fix: use 2048"):
        rules.number("width", 10 ** 400, lo=16, hi=2048, integer=True, example=832)
