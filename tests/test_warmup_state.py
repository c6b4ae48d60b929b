"""The warm-up's engine side: WAN_VOLUME_WARMUP parsing, its progress, and a load that arrives
while the warm-up holds the resident set waits for it and reads the volume once."""
from __future__ import annotations

import threading
import types

import pytest

from wan_engine import tiny_model
from wan_engine.load import assemble, layouts, warmup
from wan_engine.store import find


@pytest.mark.parametrize("value, parsed", [
    ("", None), ("off", None), ("0", None),
    ("default", ("default", ())),
    (" Wan2.1-I2V-14B-720P-Diffusers , kissing-lora/kissing_30_epochs.safetensors,",
     ("Wan2.1-I2V-14B-720P-Diffusers", ("kissing-lora/kissing_30_epochs.safetensors",))),
])
def test_parse(value, parsed):
    assert warmup.parse_warmup(value) == parsed


@pytest.mark.parametrize("value, parsed", [
    (None, None), ("", None), ("off", None), ("832x480x81", (832, 480, 81)), (" 64X48x5 ", (64, 48, 5))])
def test_parse_rehearsal(value, parsed):
    assert warmup.parse_rehearsal(value) == parsed


@pytest.mark.parametrize("value", ["832x480", "830x480x81", "832x480x80", "big", "0x0x1", "-16x16x5"])
def test_a_bad_rehearsal_size_names_the_variable_the_value_and_the_fix(value):
    from wan_engine.errors import WanVolumeError

    with pytest.raises(WanVolumeError) as err:
        warmup.parse_rehearsal(value)
    text = str(err.value)
    assert "WAN_VOLUME_WARMUP_RUN" in text and value in text and "e.g. 832x480x81" in text


def test_progress_and_shape():
    state = warmup.begin("default", ("a.safetensors",))
    assert warmup.warming()["phase"] == "waiting" and not state.done.is_set()
    state.enter("reading")
    state.on_bytes(25, 100)
    doc = warmup.warming()
    assert (doc["set"], doc["phase"], doc["progress"], doc["active"]) == ("default", "reading", 0.25, True)
    state.finish()
    doc = warmup.warming()
    assert (doc["phase"], doc["progress"], doc["active"], doc["error"]) == ("ready", 1.0, False, None)
    assert warmup.wait(0)
    state = warmup.begin("nope")
    state.finish("no complete model set named 'nope'")
    assert warmup.warming()["phase"] == "failed" and "nope" in warmup.warming()["error"]


def test_a_load_during_the_warmup_waits_and_reads_once(volume_env, monkeypatch):
    found = find.get_model_set(tiny_model.TINY_SET_NAME)
    layout = layouts.layout_named(found.layout)
    building, go_on = threading.Event(), threading.Event()
    builds = []
    real = layout.build

    def slow_build(model_set, spec):
        builds.append(model_set.name)
        building.set()
        assert go_on.wait(60)
        return real(model_set, spec)

    monkeypatch.setattr(assemble, "layout_named", lambda name: types.SimpleNamespace(build=slow_build))
    assemble.release()
    results = {}

    def warm():
        with assemble.exclusive():
            results["warm"] = assemble.load(found, "fp32")

    warmer = threading.Thread(target=warm)
    warmer.start()
    assert building.wait(60)
    prompt = threading.Thread(target=lambda: results.setdefault("prompt", assemble.load(found, "fp32")))
    prompt.start()
    prompt.join(0.5)
    assert prompt.is_alive(), "the prompt's load must wait for the warm-up"
    go_on.set()
    warmer.join(60)
    prompt.join(60)
    assert results["prompt"] is results["warm"] and builds == [found.name]
    assemble.release()
