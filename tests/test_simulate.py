"""The pack's own pipeline at full size on a simulated card (wan_engine/simulate, `plan --simulate`).

The two module fixtures are the heaviest tests of the suite's engine part: each runs one
full-size Wan2.1-I2V-14B video (1 step, cfg 5: cond and uncond) on fake tensors, ~1-3 minutes on
two cores and < 2 GB of RAM. Everything else here is fast.
"""
from __future__ import annotations

import json
import resource

import pytest
import torch

from volume_fixtures import cli
from wan_engine.load import plan as memplan
from wan_engine.load import sizes
from wan_engine.simulate import cards, fakecard
from wan_engine.simulate.report import plan_for_simulation

REF = "wan2.1-i2v-14b-720p"
MARGIN = 0.10      # the plan's estimate: at most 10 % above the simulated peak, never below


def _simulate(gb: str, size: str) -> tuple[dict, int]:
    res = cli("plan", "--set", REF, "--gpu-gb", gb, "--size", size, "--simulate", "--json", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


@pytest.fixture(scope="module")
def fp8_24gb_480p():
    return _simulate("24", "832x480x81")


@pytest.fixture(scope="module")
def block_16gb_480p():
    return _simulate("16", "832x480x81")


def _check_phases(doc: dict) -> None:
    assert doc["simulated"] is True and doc["attention"].startswith("flash (aten._scaled_dot_product_flash")
    for phase in doc["phases"]:
        sim, est = phase["simulated_peak_bytes"], phase["peak_bytes"]
        assert 0 < phase["simulated_gpu_weight_bytes"] <= sim <= doc["vram_bytes"], phase["name"]
        assert sim <= est <= sim * (1 + MARGIN), (phase["name"], est / sim)


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_24gb_480p_runs_the_dit_resident_in_fp8_and_fits(fp8_24gb_480p):
    doc, rss = fp8_24gb_480p
    assert doc["mode"] == "fp8" and doc["fp8_storage"] is True
    _check_phases(doc)
    sample = next(p for p in doc["phases"] if p["name"] == "sample")
    dit = sizes.reference(REF).weights("bf16", fp8=True).transformer
    assert sample["components"]["transformer"] == {"device": "gpu", "dtype": "fp8", "gpu_bytes": dit}
    assert sample["simulated_gpu_weight_bytes"] >= dit * 0.99    # the whole fp8 DiT on the card
    # nothing real was allocated for the weights: the process stays far below the set's ~44 GB
    assert rss < 3 * 2**30, rss / 2**30


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_block_plan_keeps_its_resident_blocks_on_the_card(block_16gb_480p):
    doc, _ = block_16gb_480p
    assert doc["mode"].endswith("block") and doc["resident_blocks"] > 0
    _check_phases(doc)
    w = sizes.reference(REF).weights("bf16", fp8=doc["fp8_storage"])
    sample = next(p for p in doc["phases"] if p["name"] == "sample")
    kept = w.dit_outside_blocks + doc["resident_blocks"] * w.block_bytes
    assert sample["simulated_gpu_weight_bytes"] >= kept + w.block_bytes   # resident + the running block


def test_a_phase_over_the_card_exits_non_zero_naming_it(monkeypatch):
    from wan_engine.simulate import report, run

    plan = plan_for_simulation(sizes.reference(REF), 24, 0.4, (832, 480, 81), "bf16")
    sim = run.Simulation(plan, "flash", {"encode": fakecard.Measure(plan.vram_bytes + 1, 1, 0),
                                         "sample": fakecard.Measure(1, 1, 0), "decode": fakecard.Measure(1, 1, 0)})
    assert sim.over() == ["encode"]
    line, = report.overruns(sim)
    assert line.startswith("phase encode: simulated peak") and "usable on this card" in line


def test_attention_goes_through_the_fused_kernel_not_the_math_one():
    heads, tokens, dim = 40, 32760, 128
    card = fakecard.FakeCard(attention="flash")
    with card.running():
        q = torch.empty(1, heads, tokens, dim, dtype=torch.bfloat16, device=fakecard.CUDA)
        with card.phase("sample"):
            out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert out.shape == q.shape
    peak = card.phases["sample"].peak_bytes
    assert peak < 4 * q.numel() * 2 < heads * tokens * tokens * 2     # linear in tokens, no score matrix
    assert card.phases["sample"].flops >= 4 * heads * tokens * tokens * dim


def test_move_keeps_shared_tensors_shared():
    card = fakecard.FakeCard()
    with card.running():
        emb = torch.nn.Embedding(10, 4)
        a, b = torch.nn.Module(), torch.nn.Module()
        a.e, b.e = emb, emb
        parent = torch.nn.ModuleDict({"a": a, "b": b})
        fakecard.move(parent, fakecard.CUDA)
        assert a.e.weight is b.e.weight and a.e.weight.device.type == "cuda"
        assert fakecard.bytes_on([parent]) == 10 * 4 * 4


def test_keep_blocks_takes_the_first_blocks_out_of_group_offloading():
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

    from wan_engine import tiny_model
    from wan_engine.load import assemble

    dit = tiny_model.build_components()["transformer"]
    cpu = torch.device("cpu")
    dit.enable_group_offload(onload_device=cpu, offload_device=cpu, offload_type="block_level",
                             num_blocks_per_group=1)
    assert assemble.keep_blocks(dit, cpu, 1) == 1
    hooked = [HookRegistry.check_if_exists_or_initialize(b).get_hook(_GROUP_OFFLOADING) is not None
              for b in dit.blocks]
    assert hooked == [False] + [True] * (len(dit.blocks) - 1)


def test_cards_cheapest_video_first_all_estimates():
    rows = cards.table(sizes.reference(REF), 832, 480, 81)
    priced = [e.usd("fast") for e in rows if e.usd("fast") is not None]
    assert priced == sorted(priced) and all(e.plan.fits for e in rows)
    assert all(e.to_dict()["estimated"] is True for e in rows)
    doc = {e.card.name: e for e in rows}
    assert doc["H200 141GB"].plan.mode == "resident"
    assert doc["H200 141GB"].seconds["quality"] > 10 * doc["H200 141GB"].seconds["fast"]


@pytest.mark.parametrize("gb", [12, 16, 24, 32, 48, 80, 141])
@pytest.mark.parametrize("size", [(832, 480, 81), (1280, 720, 81)])
def test_every_card_has_a_plan_that_fits(gb, size):
    plan = memplan.plan_for(sizes.reference(REF), memplan.usable_vram(gb * 2**30), *size)
    assert plan.fits, plan.summary()
