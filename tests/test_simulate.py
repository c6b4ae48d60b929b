"""The pack's own pipeline at full size on a simulated card (wan_engine/simulate, `plan --simulate`).

The `simulation` tests are the heaviest of the suite's engine part: each runs one full-size
Wan2.1-I2V-14B video (1 step, cfg 5: cond and uncond) on fake tensors, every card x size x DiT file
kind of wan_engine/simulate/matrix.py, ~15-60 s of CPU each with repeated calls replayed and
< 2 GB of RAM. Everything else here is fast.
"""
from __future__ import annotations

import json
import resource

import pytest
import torch

from volume_fixtures import cli
from wan_engine.load import plan as memplan
from wan_engine.load import sizes
from wan_engine.simulate import cards, fakecard, matrix, run
from wan_engine.simulate.report import plan_for_simulation

REF = "wan2.1-i2v-14b-720p"
GIB = 2**30


@pytest.fixture(scope="module")
def fp8_24gb_480p_cli():
    """One case through the CLI, in its own process: the JSON a user gets, and that process's RSS."""
    res = cli("plan", "--set", REF, "--gpu-gb", "24", "--size", "832x480x81", "--simulate", "--json",
              timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_the_cli_reports_each_phase_and_allocates_nothing_for_the_weights(fp8_24gb_480p_cli):
    doc, rss = fp8_24gb_480p_cli
    assert doc["simulated"] is True and doc["attention"].startswith("flash (aten._scaled_dot_product_flash")
    assert doc["mode"] == "fp8" and doc["fp8_storage"] is True
    for phase in doc["phases"]:
        sim, est = phase["simulated_peak_bytes"], phase["peak_bytes"]
        assert 0 < phase["simulated_gpu_weight_bytes"] <= sim <= doc["vram_bytes"], phase["name"]
        assert sim <= est <= sim * (1 + matrix.MARGIN), (phase["name"], est / sim)
        assert phase["simulated_flops"] > 0
    # nothing real was allocated for the weights: the process stays far below the set's ~44 GB
    assert rss < 3 * GIB, rss / GIB


@pytest.mark.simulation
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("case", matrix.cases(), ids=lambda c: c.label.replace(" ", "-"))
def test_every_card_and_size_fits_and_the_plan_agrees_with_the_simulated_peaks(case):
    plan = case.plan()
    if case.same_as_bf16():       # scales applied at load: in memory it is the bf16 set
        bf16 = case.bf16().plan()
        assert plan.summary() == bf16.summary() and plan.phases == bf16.phases
        return
    sim = matrix.simulate(case)
    assert matrix.disagreements(sim) == [], plan.summary()
    w = sizes.reference(REF).weights("bf16", fp8=plan.fp8_storage)
    sample = sim.phases["sample"]
    assert 0 < sample.weight_bytes <= sample.peak_bytes
    if plan.mode.endswith("block"):       # its resident blocks stay on the card while it samples
        assert plan.resident_blocks >= 0
        kept = w.dit_outside_blocks + plan.resident_blocks * w.block_bytes
        assert sample.weight_bytes >= kept + w.block_bytes, (sample.weight_bytes / GIB, kept / GIB)
        assert sample.weight_bytes < w.transformer       # and not the whole DiT
    else:                                 # the whole DiT on the card, in the plan's dtype
        assert sample.weight_bytes >= w.transformer * 0.99
    if (case.gb, case.size) == (24, (832, 480, 81)):
        assert plan.mode == "fp8" and plan.fp8_storage     # 24 GB at 480p: the DiT resident in fp8
    if case.gb == 12:                     # the encoders and the VAE off the card while it samples
        off = plan.phase("sample").components
        assert plan.fits and all(off[p].device == "cpu" for p in ("text_encoder", "image_encoder", "vae"))


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_sequential_offload_streams_each_layer_and_names_the_phase_over_the_card():
    """Below 8 GB the plan falls back to sequential offload (every layer to the card just before it
    runs): simulated too, and on 6 GB at 480p the encode phase is over the card, said so."""
    res = cli("plan", "--set", REF, "--gpu-gb", "6", "--size", "832x480x81", "--simulate", "--json",
              timeout=1500)
    assert res.returncode == 1, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["mode"] == "sequential" and doc["simulated"] is True
    assert "phase encode: simulated peak" in res.stderr and "plan sequential" in res.stderr
    largest = sizes.reference(REF).weights("bf16").largest_bytes
    for phase in doc["phases"]:      # one layer's weights at a time, never a whole part
        assert phase["simulated_gpu_weight_bytes"] <= 2 * largest, phase["name"]
        assert phase["simulated_peak_bytes"] <= phase["peak_bytes"], phase["name"]    # the plan errs high


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_replayed_calls_give_the_peaks_and_flops_of_running_every_call():
    """The replay shortcut (replay.py) against the real thing: a block plan (streamed blocks, their
    hooks), encode and decode tiles (the VAE's feature cache), 17 frames to keep it short."""
    import dataclasses

    plan = matrix.Case(12, (832, 480, 81), "bf16").plan()
    plan = dataclasses.replace(plan, size=(832, 480, 17))
    assert plan.mode.endswith("block") and plan.decode_tile and plan.encode_tile
    fast, full = run.simulate(plan, replay=True), run.simulate(plan, replay=False)
    assert fast.calls["replayed"] > 50 and not full.calls.get("replayed")
    assert {n: (m.peak_bytes, m.weight_bytes, m.flops) for n, m in fast.phases.items()} == \
        {n: (m.peak_bytes, m.weight_bytes, m.flops) for n, m in full.phases.items()}


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
