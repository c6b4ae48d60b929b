"""Wan2.2 I2V A14B (two experts) at full size on the simulated card (wan_engine/simulate).

The experts run in their own phases (``sample_high``, then ``sample_low``); the placement does what
nodes/expert_swap.py has ComfyUI do at the boundary, and a block plan trades the experts' kept
blocks with ``assemble.bring_kept_blocks``, the function the nodes call. Each case ~30-40 s of CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from volume_fixtures import cli
from wan22_fullsize import write_fullsize_wan22
from wan_engine.load import assemble, sizes
from wan_engine.load import plan as memplan
from wan_engine.simulate import matrix

GIB = 2**30
CASES = [matrix.Case(gb, (1280, 720, 81), "wan2.2-fp8_scaled") for gb in matrix.CARDS_GB] + \
        [matrix.Case(gb, (1280, 720, 81), "wan2.2-bf16") for gb in (24, 80)]


@pytest.mark.simulation
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label.replace(" ", "-"))
def test_both_experts_fit_every_card_and_the_plan_agrees(case):
    plan = case.plan()
    assert plan.experts in ("both", "swap")
    if case.same_as_bf16():
        assert plan.phases == case.bf16().plan().phases
        return
    sim = matrix.simulate(case)
    assert matrix.disagreements(sim) == [], plan.summary()
    w = sizes.reference(matrix.SETS[case.headers]).weights("bf16", fp8=plan.fp8_storage)
    sample = sim.phases["sample"]
    if plan.experts == "both":          # both experts on the card while it samples
        assert sample.weight_bytes >= (w.transformer + w.expert_2) * 0.99
    elif plan.mode.endswith("block"):   # one expert's kept blocks (and the block running), never both
        kept = w.dit_outside_blocks + plan.resident_blocks * w.block_bytes
        assert kept + w.block_bytes <= sample.weight_bytes < kept + (plan.resident_blocks + 3) * w.block_bytes
    else:                               # one expert at a time
        assert w.transformer * 0.99 <= sample.weight_bytes < w.transformer + w.expert_2 * 0.5


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_plan_simulate_on_the_comfy_files_on_the_volume(tmp_path: Path):
    """The user's path: `plan --set <the Comfy-Org files> --simulate` reads their headers (fp8
    files: scales kept) and simulates both experts; on 48 GB one expert at a time."""
    write_fullsize_wan22(tmp_path)
    res = cli("plan", "--set", "comfy/wan2.2_i2v_{high,low}_noise_14B_fp8_scaled", "--gpu-gb", "48",
              "--size", "1280x720x81", "--simulate", "--json", "--models-dir", str(tmp_path), timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["simulated"] is True and doc["experts"] == "swap"
    for phase in doc["phases"]:
        assert phase["simulated_peak_bytes"] <= phase["peak_bytes"] <= phase["simulated_peak_bytes"] * 1.1


def test_the_reference_plans_as_the_header_only_comfy_files(tmp_path: Path):
    """The built-in reference counts what Comfy-Org's files' headers hold (tests/wan22_fullsize.py)."""
    files = sizes.from_model_set(write_fullsize_wan22(tmp_path))
    ref = sizes.reference("wan2.2-i2v-a14b-fp8-scaled")
    assert files.fp8_files and ref.fp8_files
    for gb in (24, 48, 80):
        a, b = (memplan.plan_for(s, memplan.usable_vram(gb * GIB), 1280, 720, 81) for s in (files, ref))
        assert (a.mode, a.experts, a.resident_blocks, a.phases) == (b.mode, b.experts, b.resident_blocks, b.phases)


def test_entering_an_expert_sends_the_other_experts_kept_blocks_to_ram():
    """What nodes/memory.py and nodes/expert_swap.py call in a block plan: without it both experts
    kept their resident blocks on the GPU, twice what the plan counts."""
    pipe = torch.nn.Module()
    pipe.transformer, pipe.transformer_2 = torch.nn.Module(), torch.nn.Module()
    for dit in (pipe.transformer, pipe.transformer_2):
        dit.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(4))
        for block in dit.blocks[:2]:
            block.wan_kept = True
    moves: list[tuple[str, int, str]] = []

    def move(block, device):
        owner = "high" if any(block is b for b in pipe.transformer.blocks) else "low"
        moves.append((owner, next(i for i, b in enumerate(getattr(pipe, "transformer" if owner == "high"
                                                                  else "transformer_2").blocks) if b is block),
                      device.type))
    assert assemble.bring_kept_blocks(pipe, "transformer_2", torch.device("meta"), move) == 2
    assert moves == [("high", 0, "cpu"), ("high", 1, "cpu"), ("low", 0, "meta"), ("low", 1, "meta")]
    moves.clear()
    assert assemble.bring_kept_blocks(pipe, "transformer", torch.device("meta"), move) == 2
    assert moves == [("low", 0, "cpu"), ("low", 1, "cpu"), ("high", 0, "meta"), ("high", 1, "meta")]
