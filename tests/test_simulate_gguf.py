"""A GGUF DiT on the simulated card (wan_engine/simulate/gguf_fake.py, `plan --simulate`).

The fast tests hold the fake GGUF DiT to the real loader (a tiny GGUF file written as city96's
tools write it, read by ``gguf_dit.read_gguf_dit``) and measure the dequantised copy a layer makes
on the card. The two module fixtures each run one full-size Wan2.1-I2V-14B video (1 step, cfg 5)
with a quantised DiT on fake tensors: ~40-90 s of CPU on two cores, ~1.1 GB of RAM.
"""
from __future__ import annotations

import json
import resource

import pytest
import torch

import layout_writers as lw
from test_comfy_by_content import NEEDS_GGUF_DIFFUSERS
from volume_fixtures import cli
from wan_engine.load import sizes
from wan_engine.simulate import fakecard, fullsize, gguf_fake
from wan_engine.tiny_model import TRANSFORMER_CONFIG, build_components

MARGIN = 0.10      # the plan's estimate: at most 10 % above the simulated peak, never below
pytestmark = NEEDS_GGUF_DIFFUSERS


@pytest.fixture(scope="module")
def tiny_dit():
    return build_components()["transformer"]


@pytest.mark.parametrize("qtype", gguf_fake.QTYPES)
def test_the_fake_gguf_dit_is_what_the_loader_makes_of_a_file(tiny_dit, tmp_path, qtype):
    """Same parameters, GGML types, byte shapes and dtypes as the real load of a written file."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from wan_engine.load.layouts import gguf_dit

    path = lw.gguf_dit(tiny_dit, tmp_path / f"tiny-{qtype}.gguf", qtype)
    real = gguf_fake.quant_types(gguf_dit.read_gguf_dit(path, torch.bfloat16))
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = gguf_fake.quant_types(gguf_fake.build_dit(torch.bfloat16, qtype, dict(TRANSFORMER_CONFIG)))
    assert fake == real
    assert {t for t, _, _ in real.values()} == {"", qtype}              # quantised Linears and the rest
    # the fake checkpoint's bytes are the file's tensor bytes (the header aside)
    shapes = gguf_fake.wan_shapes(dict(TRANSFORMER_CONFIG))
    assert 0 < path.stat().st_size - gguf_fake.stored_bytes(shapes, qtype) < 64 * 1024
    counted = sizes.from_model_set(_set_of(path))
    assert counted.dit_gguf == qtype and counted.dit.gguf_bytes == path.stat().st_size


def _set_of(path):
    from wan_engine.store.modelset import ModelSet
    return ModelSet("g", "comfy", path.parent, {"transformer": path})


# bytes per weight value alive while a GGUFLinear runs, beside its quantised bytes: diffusers'
# dequantised fp16 and its compute-dtype copy (Q8_0); Q4_K's nibbles and products on top
DEQUANT_BYTES = {"Q8_0": (4.0, 4.3), "Q4_K": (5.0, 5.3)}


@pytest.mark.parametrize("qtype", gguf_fake.QTYPES)
def test_a_layer_dequantises_its_weight_on_the_card_while_it_runs(qtype):
    card = fakecard.FakeCard()
    with card.running():
        dit = gguf_fake.build_dit(torch.bfloat16, qtype, {**TRANSFORMER_CONFIG, "ffn_dim": 4096})
        layer = dit.blocks[0].ffn.net[0].proj
        fakecard.move(layer, fakecard.CUDA)
        assert layer.weight.quant_type.name == qtype and layer.weight.device.type == "cuda"
        x = torch.empty(1, 1, layer.in_features, dtype=torch.bfloat16, device=fakecard.CUDA)
        with card.phase("sample"):
            y = layer(x)
        fakecard.move(layer, fakecard.CPU)
        assert card.tracker.now() == x.nbytes + y.nbytes       # the copies went with the layer
    values = layer.in_features * layer.out_features
    extra = (card.phases["sample"].peak_bytes - fakecard.bytes_on([layer], "cpu") - x.nbytes) / values
    low, high = DEQUANT_BYTES[qtype]
    assert y.shape == (1, 1, 4096) and low <= extra < high, extra


def test_reference_sets_hold_the_quantised_bytes_of_the_real_shapes():
    assert gguf_fake.reference_bytes() == {q: b for q, b in sizes.GGUF_REFERENCES.values()}
    for name, (qtype, _) in sizes.GGUF_REFERENCES.items():
        counted = sizes.reference(name)
        assert counted.dit_gguf == qtype and counted.weights("bf16").transformer_dtype == "gguf"
        fullsize.check_shapes(counted)             # simulated, no longer refused


@pytest.mark.parametrize("name", sorted(sizes.GGUF_REFERENCES))
def test_planning_a_gguf_reference_imports_no_torch(name):
    import subprocess
    import sys

    from test_cli_plan import NO_HEAVY
    from volume_fixtures import ROOT
    res = subprocess.run([sys.executable, "-c", NO_HEAVY, "plan", "--set", name, "--gpu-gb", "16", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "HEAVY [] 0" in res.stderr, res.stderr[-2000:]


def _simulate(set_name: str, gb: str) -> tuple[dict, int]:
    res = cli("plan", "--set", set_name, "--gpu-gb", gb, "--size", "832x480x81", "--simulate", "--json",
              timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


@pytest.fixture(scope="module")
def q8_16gb():
    return _simulate("wan2.1-i2v-14b-720p-q8_0", "16")


@pytest.fixture(scope="module")
def q4_16gb():
    return _simulate("wan2.1-i2v-14b-720p-q4_k", "16")


def _check_phases(doc: dict) -> None:
    """As tests/test_simulate.py checks a bf16 set."""
    for phase in doc["phases"]:
        sim, est = phase["simulated_peak_bytes"], phase["peak_bytes"]
        assert 0 < phase["simulated_gpu_weight_bytes"] <= sim <= doc["vram_bytes"], phase["name"]
        assert sim <= est <= sim * (1 + MARGIN), (phase["name"], est / sim)


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_q8_0_on_16gb_streams_its_quantised_blocks_and_fits(q8_16gb):
    doc, rss = q8_16gb
    assert doc["mode"] == "block" and doc["resident_blocks"] > 0 and not doc["fp8_storage"]
    _check_phases(doc)
    w = sizes.reference("wan2.1-i2v-14b-720p-q8_0").weights("bf16")
    sample = next(p for p in doc["phases"] if p["name"] == "sample")
    assert sample["components"]["transformer"]["dtype"] == "gguf"
    kept = w.dit_outside_blocks + doc["resident_blocks"] * w.block_bytes
    assert sample["simulated_gpu_weight_bytes"] >= kept + w.block_bytes   # resident + the running block
    assert rss < 3 * 2**30, rss / 2**30


@pytest.mark.simulation
@pytest.mark.timeout(1800)
def test_q4_k_on_16gb_keeps_the_quantised_dit_on_the_card_and_fits(q4_16gb):
    doc, rss = q4_16gb
    assert doc["mode"] == "swap"
    _check_phases(doc)
    dit = sizes.reference("wan2.1-i2v-14b-720p-q4_k").weights("bf16").transformer
    bf16 = sizes.reference("wan2.1-i2v-14b-720p").weights("bf16").transformer
    sample = next(p for p in doc["phases"] if p["name"] == "sample")
    assert sample["components"]["transformer"] == {"device": "gpu", "dtype": "gguf", "gpu_bytes": dit}
    # the whole DiT on the card, still quantised (a bf16 DiT would be 3.5 times larger)
    assert dit * 0.99 <= sample["simulated_gpu_weight_bytes"] < bf16 / 3
    assert rss < 3 * 2**30, rss / 2**30
