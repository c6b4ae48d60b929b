"""`wanvolume.py plan`: the plan for a reference or a set on the volume; bad arguments named."""
from __future__ import annotations

import json

import pytest

from volume_fixtures import cli
from wan_engine import tiny_model

REF = "wan2.1-i2v-14b-720p"


def test_json_is_one_object_that_fits():
    res = cli("plan", "--set", REF, "--gpu-gb", "24", "--size", "832x480x81", "--json", timeout=240)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["fits"] is True and doc["peak_bytes"] <= 24 * 2**30
    sample = next(p for p in doc["phases"] if p["name"] == "sample")["components"]["transformer"]
    assert not (sample["device"] == "gpu" and sample["dtype"] in ("bf16", "fp16"))


def test_table_for_the_usual_cards():
    res = cli("plan", "--set", REF, timeout=240)
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[3:]}
    assert list(rows) == ["12", "16", "24", "32", "48", "80", "141"]
    assert rows["80"].split()[1] == "resident" and rows["48"].split()[1] == "swap"


def test_a_set_on_the_volume(volume_env):
    res = cli("plan", "--set", tiny_model.TINY_SET_NAME, "--gpu-gb", "16", "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["mode"] == "resident"


@pytest.mark.parametrize("args,field,fix", [
    (("--size", "830x480x81"), "--size", "832x480x81"),
    (("--size", "832x480x80"), "--size", "832x480x81"),
    (("--gpu-gb", "lots"), "--gpu-gb", "e.g. 24"),
    (("--gpu-gb", "0"), "--gpu-gb", "e.g. 24"),
    (("--precision", "fp8"), "--precision", "bf16"),
])
def test_bad_arguments_are_named(args, field, fix):
    res = cli("plan", "--set", REF, *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert field in res.stderr and fix in res.stderr


def test_unknown_set_names_the_argument_and_the_references(volume_env):
    res = cli("plan", "--set", "no-such-set", "--gpu-gb", "24")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--set = 'no-such-set'" in res.stderr and REF in res.stderr
