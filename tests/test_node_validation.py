"""Every input any node declares is checked by its validate_inputs, with no per-input list.

Runs the nodes' classmethods directly (ComfyUI's comfy_api imported, no server): for each widget
input in each node's schema, a value of the wrong kind must be refused naming that input. Inputs
added to a schema later are covered by the same loop.
"""
from __future__ import annotations

import json
import math

import pytest

import comfy_headless
from helpers import API_WORKFLOWS, REPO, TINY_LORA
from wan_engine import tiny_model
from wan_engine.errors import WanVolumeError

WIDGET_BAD = {"INT": ["abc", math.nan, math.inf, 2 ** 70], "FLOAT": [math.nan, -math.inf, "x", 1e30],
              "COMBO": ["no-such-choice", 3, ""], "STRING": [5, None], "BOOLEAN": ["yes", 1]}


@pytest.fixture
def nodes_under_test(volume_env, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(comfy_headless.comfyui_dir()))   # ComfyUI's nodes.py before the pack's nodes/
    import comfy.cli_args

    comfy.cli_args.args.cpu = True   # as `main.py --cpu`: validation imports ComfyUI's graph code, which sets up the device
    import folder_paths

    from pack import pack_module

    WanVolumeModelLoader = pack_module("nodes.loader").WanVolumeModelLoader
    WanVolumeLoraApply = pack_module("nodes.lora_node").WanVolumeLoraApply
    WanVolumeSampler = pack_module("nodes.sampler").WanVolumeSampler
    WanVolumeVideoCombine = pack_module("nodes.video").WanVolumeVideoCombine

    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    wf = json.loads(API_WORKFLOWS[0].read_text())
    good = {n["class_type"]: {k: v for k, v in n["inputs"].items() if not isinstance(v, list)} for n in wf.values()}
    good["WanVolumeModelLoader"]["model_set"] = tiny_model.TINY_SET_NAME
    good["WanVolumeLoraApply"]["lora"] = TINY_LORA
    return [(cls, good[cls.__name__]) for cls in (WanVolumeModelLoader, WanVolumeLoraApply,
                                                    WanVolumeSampler, WanVolumeVideoCombine)]


def test_every_declared_input_is_checked(nodes_under_test):
    checked = 0
    for cls, good in nodes_under_test:
        assert cls.validate_inputs(**good) is True
        for inp in cls.define_schema().inputs:
            for bad in WIDGET_BAD.get(str(inp.get_io_type()), []):
                with pytest.raises(WanVolumeError) as err:
                    cls.validate_inputs(**(good | {inp.id: bad}))
                assert str(err.value).startswith(f"{inp.id} = "), (cls.__name__, inp.id, bad, str(err.value))
                assert "Fix: " in str(err.value)
                checked += 1
    assert checked >= 70


def test_a_null_widget_value_is_refused_and_a_link_is_not(nodes_under_test):
    _, _, _, (combine, good) = nodes_under_test
    with pytest.raises(WanVolumeError, match="format = None"):
        combine.validate_inputs(**(good | {"format": None}))
    # what ComfyUI passes for a linked format: None plus its type in input_types
    assert combine.validate_inputs(input_types={"format": "COMBO"}, **(good | {"format": None}))
    with pytest.raises(WanVolumeError, match="format = 'IMAGE': is linked to an output of type IMAGE"):
        combine.validate_inputs(input_types={"format": "IMAGE"}, **(good | {"format": None}))
