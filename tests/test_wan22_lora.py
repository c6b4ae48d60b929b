"""LoRAs per expert on a Wan2.2 set against diffusers' own ``load_lora_weights(...,
load_into_transformer_2=True)``; a Wan2.1 LoRA's CLIP-branch keys reported as having no target."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import REPO, tiny_request
from wan22_fixtures import wan22_volumes, wan22_components  # noqa: F401 (fixtures)
from wan_engine import tiny_model, tiny_wan22
from wan_engine.errors import InvalidInput
from wan_engine.load import assemble
from wan_engine.lora import apply, experts as lora_experts
from wan_engine.sample import sampling
from wan_engine.sample.decode import TileSettings
from wan_engine.store.scan import SCANS

REQ = tiny_request(steps=4, cfg=4.0, cfg_low=3.0, boundary=0.9, tiles=TileSettings(False, 64, 32))


@pytest.fixture(scope="module")
def image():
    return Image.open(REPO / "assets" / "two_people.png")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A high file, a low file (no CLIP-branch keys: diffusers loads them as they are), and the
    kissing-style Wan2.1 LoRA with its k_img / v_img pairs."""
    d = tmp_path_factory.mktemp("wan22-loras")
    out = {}
    for name, seed in (("high", 31), ("low", 32)):
        sd = {k: v for k, v in tiny_model.make_wan_style_lora(seed=seed, scale=0.3).items() if "_img" not in k}
        save_file(sd, str(d / f"{name}.safetensors"))
        out[name] = d / f"{name}.safetensors"
    save_file(tiny_model.make_wan_style_lora(seed=33, scale=0.3), str(d / "wan21.safetensors"))
    out["wan21"] = d / "wan21.safetensors"
    return out


@pytest.fixture
def loaded(wan22_volumes):
    assemble.release()
    (found,) = [s for scan in SCANS for s in scan.scan(wan22_volumes / "diffusers")]
    yield assemble.load(found, "fp32")
    assemble.release()


def run(loaded, image, uses) -> np.ndarray:
    lora_experts.activate(loaded, tuple(uses))
    return sampling.sample(loaded, image, REQ)


def reference(components, image, high=None, low=None) -> np.ndarray:
    from safetensors.torch import load_file

    parts = {k: copy.deepcopy(v) if isinstance(v, torch.nn.Module) else v for k, v in components.items()}
    pipe = tiny_wan22.pipeline(parts, REQ.boundary)
    if high is not None:
        pipe.load_lora_weights(load_file(str(high)), adapter_name="high")
    if low is not None:
        pipe.load_lora_weights(load_file(str(low)), adapter_name="low", load_into_transformer_2=True)
    start = sampling.fit_image(image, REQ.width, REQ.height)
    return pipe(image=start, prompt=REQ.prompt, negative_prompt=REQ.negative_prompt, height=REQ.height,
                width=REQ.width, num_frames=REQ.frames, num_inference_steps=REQ.steps, guidance_scale=REQ.cfg,
                guidance_scale_2=REQ.cfg_low, generator=torch.Generator().manual_seed(REQ.seed),
                output_type="np").frames[0]


def test_a_pair_changes_each_expert_by_its_own_file(loaded, wan22_components, image, files):
    ours = run(loaded, image, [apply.LoraUse(str(files["high"]), 1.0, expert="high"),
                               apply.LoraUse(str(files["low"]), 1.0, expert="low")])
    ref = reference(wan22_components, image, files["high"], files["low"])
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    only_high = run(loaded, image, [apply.LoraUse(str(files["high"]), 1.0, expert="high")])
    np.testing.assert_allclose(only_high, reference(wan22_components, image, high=files["high"]), atol=1e-4, rtol=0)
    assert np.abs(only_high - ours).max() > 1e-2                     # the low file changed the low steps
    views = lora_experts.views_of(loaded)
    assert set(apply.state_of(views["transformer"]).files.values()) == {str(files["high"])}
    assert set(apply.state_of(views["transformer_2"]).files.values()) == {str(files["low"])}


def test_strength_zero_is_the_base_model(loaded, wan22_components, image, files):
    base = run(loaded, image, [])
    off = run(loaded, image, [apply.LoraUse(str(files["high"]), 0.0, expert="both")])
    assert np.array_equal(base, off)
    np.testing.assert_allclose(base, reference(wan22_components, image), atol=1e-5, rtol=0)


def test_a_wan21_lora_on_both_experts_reports_clip_keys_as_without_target(loaded, image, files):
    reports = lora_experts.ensure(loaded, files["wan21"], "both")
    assert set(reports) == {"high", "low"}
    for r in reports.values():
        assert r.status == "full" and r.unmatched == 0
        assert len(r.no_target) == 4 and all("_img" in e for e in r.no_target)   # k_img, v_img x 2 blocks
        assert "4 CLIP-branch modules have no target" in r.summary()
    assert np.isfinite(run(loaded, image, [apply.LoraUse(str(files["wan21"]), 1.0)])).all()


def test_one_expert_only_on_a_wan21_set_is_refused():
    with pytest.raises(InvalidInput) as err:
        lora_experts.check_expert("high", two_experts=False)
    assert str(err.value).startswith("expert = 'high'") and "Wan2.1 set" in str(err.value)
    assert lora_experts.check_expert("both", two_experts=False) == "both"
