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


HEAVY = ("torch", "diffusers", "transformers")
NO_HEAVY = ("import sys, wanvolume\nrc = wanvolume.main(sys.argv[1:])\n"
            "print('HEAVY', [m for m in " + repr(HEAVY) + " if m in sys.modules], rc, file=sys.stderr)")


@pytest.mark.parametrize("args,code", [
    (("--set", REF), 0),
    (("--set", REF, "--gpu-gb", "4"), 1),
    (("--set", REF, "--gpu-gb", "24", "--size", "832x480x81", "--json"), 0),
    (("--set", tiny_model.TINY_SET_NAME, "--gpu-gb", "16"), 0),
])
def test_plan_imports_no_torch(volume_env, args, code):
    """The arithmetic plan (not --simulate) runs before a GPU is rented: no torch, diffusers or
    transformers import (seconds of start-up and gigabytes of install it does not need)."""
    import subprocess
    import sys
    from volume_fixtures import ROOT
    res = subprocess.run([sys.executable, "-c", NO_HEAVY, "plan", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert f"HEAVY [] {code}" in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("name", [REF, "wan2.2-i2v-a14b"])
def test_the_stored_reference_counts_are_what_the_configs_build(name):
    from wan_engine.load import sizes
    stored = sizes.reference(name)
    built = sizes.build_reference(name)
    assert sizes.reference_counts(stored) == sizes.reference_counts(built)
    assert stored.dit.params > 14e9 and stored.dit.blocks == 40
    assert (stored.dit_2 is not None) == (name != REF)


def test_plan_on_a_card_that_does_not_fit_exits_1():
    res = cli("plan", "--set", REF, "--gpu-gb", "4")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1].split()[-1] == "NO"
