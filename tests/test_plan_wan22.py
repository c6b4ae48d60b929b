"""The memory plan on a full-size Wan2.2 I2V A14B set (header-only files, real shapes): one expert
is the DiT of each sampling phase; both stay resident where every phase fits them, else one at a
time with both kept in RAM."""
from __future__ import annotations

import json

import pytest
import torch

from volume_fixtures import cli
from wan22_fixtures import DIFFUSERS_NAME, wan22_volumes  # noqa: F401 (fixture)
from wan22_fullsize import write_fullsize_wan22
from wan_engine.load import plan, sizes

GIB = 2**30


@pytest.fixture(scope="module")
def wan22(tmp_path_factory) -> sizes.SetSizes:
    """Comfy-Org's fp8_scaled experts (their Linears in fp8 on the volume)."""
    return sizes.from_model_set(write_fullsize_wan22(tmp_path_factory.mktemp("fullsize22")))


@pytest.fixture(scope="module")
def wan22_bf16(tmp_path_factory) -> sizes.SetSizes:
    return sizes.from_model_set(write_fullsize_wan22(tmp_path_factory.mktemp("fullsize22b"), torch.bfloat16))


def test_each_expert_is_counted_from_its_header(wan22):
    assert wan22.dit_2 is not None and wan22.dit.blocks == wan22.dit_2.blocks == 40
    assert 14.2e9 < wan22.dit.params == wan22.dit_2.params < 14.4e9       # no CLIP branch
    w = wan22.weights("bf16")
    assert w.expert_2 == w.transformer and 26.5 < w.transformer / GIB < 26.8
    assert 13.2 < wan22.weights("bf16", fp8=True).expert_2 / GIB < 13.6


def plan_on(counted, card: int, force=None) -> plan.Plan:
    return plan.plan_for(counted, plan.usable_vram(card * GIB), 1280, 720, 81, force=force)


@pytest.mark.parametrize("card", [80, 141])
def test_fp8_set_both_resident_on_80_gb_and_up(wan22, card):
    assert wan22.fp8_files
    p = plan_on(wan22, card)    # auto: 80 GB keeps the fp8 files in fp8 rather than swap in 16 bits
    assert p.fits and p.experts == "both" and p.experts_ram_bytes == 0
    assert p.fp8_storage == (card == 80)                 # 141 GB holds both in bf16
    for phase in p.phases:
        t, t2 = phase.components["transformer"], phase.components["transformer_2"]
        assert t2.device == t.device and t2.gpu_bytes == t.gpu_bytes
        assert phase.peak_bytes == sum(c.gpu_bytes for c in phase.components.values()) + phase.working_bytes
    assert p.phase("sample").components["transformer_2"].device == "gpu"
    assert "both Wan2.2 experts resident" in p.summary()


@pytest.mark.parametrize("card,force,fp8_set", [(48, None, True), (48, "fp8", True), (24, None, True),
                                                (80, None, False), (48, None, False)])
def test_one_expert_at_a_time_where_both_do_not_fit(wan22, wan22_bf16, card, force, fp8_set):
    p = plan_on(wan22 if fp8_set else wan22_bf16, card, force)
    w = (wan22 if fp8_set else wan22_bf16).weights("bf16", fp8=p.fp8_storage)
    assert p.fits and p.experts == "swap"
    assert all(ph.components["transformer_2"].device == "cpu" for ph in p.phases)
    assert p.experts_ram_bytes == w.transformer + w.expert_2                # both kept in RAM
    # the second expert beside the first in the phases where the DiT is on the GPU would not fit
    budget = p.vram_bytes * (1 - plan.SAFETY)
    if p.mode in ("resident", "swap", "fp8"):
        assert any(ph.peak_bytes + w.expert_2 > budget for ph in p.phases
                   if ph.components["transformer"].device == "gpu")
    assert f"both kept in RAM: {w.transformer * 2 / GIB:.1f} GiB" in p.summary()


def test_bf16_both_resident_on_141_gb(wan22_bf16):
    assert not wan22_bf16.fp8_files
    p = plan_on(wan22_bf16, 141)
    assert p.mode == "resident" and not p.fp8_storage and p.experts == "both"
    assert p.phase("sample").components["transformer_2"].dtype == "bf16"


def test_wan21_plans_have_no_expert_decision():
    p = plan_on(sizes.reference("wan2.1-i2v-14b-720p"), 80)
    assert p.experts == "" and "transformer_2" not in p.phase("sample").components
    assert "experts" not in p.to_dict()


def test_cli_plans_a_wan22_set(wan22_volumes, monkeypatch):
    vol = wan22_volumes / "diffusers"
    res = cli("plan", "--set", DIFFUSERS_NAME, "--gpu-gb", "16", "--json", "--models-dir", str(vol), timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["experts"] == "both" and doc["phases"][1]["components"]["transformer_2"]["device"] == "gpu"
    table = cli("plan", "--set", DIFFUSERS_NAME, "--gpu-gb", "16", "--models-dir", str(vol), timeout=120)
    assert table.returncode == 0 and "both Wan2.2 experts resident" in table.stdout
    sim = cli("plan", "--set", DIFFUSERS_NAME, "--gpu-gb", "16", "--simulate", "--models-dir", str(vol),
              timeout=120)
    # a tiny set: the simulation builds the real 14B shapes only, and says so
    assert sim.returncode != 0 and "builds the 14B shape" in sim.stderr and "without --simulate" in sim.stderr


def test_cli_plans_a_fullsize_wan22_set_on_the_volume(tmp_path):
    """`plan` on the Comfy-Org fp8 set found by content (header-only files): 80 GB keeps both experts
    resident in fp8; 48 GB swaps one expert at a time and says how much RAM both take."""
    write_fullsize_wan22(tmp_path)
    name = "comfy/wan2.2_i2v_{high,low}_noise_14B_fp8_scaled"
    res = cli("plan", "--set", name, "--gpu-gb", "80", "--json", "--models-dir", str(tmp_path), timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["experts"] == "both" and doc["fp8_storage"] and doc["mode"] == "fp8"
    table = cli("plan", "--set", name, "--models-dir", str(tmp_path), timeout=120)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[3:10]}
    assert "experts swap" in rows["48"] and "experts both" in rows["80"] and "experts both" in rows["141"]
    assert "48 GB, Wan2.2: one Wan2.2 expert on the GPU at a time" in table.stdout
    assert "both kept in RAM: 53.3 GiB" in table.stdout
