"""The run report's engine: prices, the phase record, the JSON file and the tags in the video."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from wan_engine import prices, report, video
from wan_engine.errors import InvalidInput

ENV = report.ENV_PRICE


@pytest.mark.parametrize("raw", ["abc", "nan", "inf", "-inf", "-0.5", "1e999", "2,99", "$3"])
def test_a_bad_price_is_refused_naming_variable_value_and_fix(raw):
    with pytest.raises(InvalidInput) as err:
        report.price_setting({ENV: raw})
    text = str(err.value)
    assert text.startswith(f"{ENV} = {raw!r}: ") and "Fix: set " + ENV in text
    assert "2.99" in text      # the fix's example passes the rule
    assert report.price_setting({ENV: "2.99"}) == 2.99


@pytest.mark.parametrize("raw, value", [("0", 0.0), (" 3.59 ", 3.59), ("", None), ("  ", None)])
def test_a_good_price_or_none(raw, value):
    assert report.price_setting({ENV: raw}) == value
    assert report.price_setting({}) is None


@pytest.mark.parametrize("name, per_gpu_second", [
    ("NVIDIA H100 80GB HBM3", 0.00116), ("NVIDIA H200", 0.00155), ("NVIDIA A100-SXM4-80GB", 0.00076),
    ("NVIDIA GeForce RTX 4090", 0.00031), ("NVIDIA L40S", 0.00053), ("NVIDIA L4", 0.00019),
    ("NVIDIA RTX 6000 Ada Generation", 0.00053), ("NVIDIA RTX A6000", 0.00034),
    ("NVIDIA RTX 4000 Ada Generation", 0.00016), ("NVIDIA B200", 0.00240)])
def test_the_table_prices_gpus_by_name(name, per_gpu_second):
    assert prices.gpu_price_per_hour(name) == pytest.approx(per_gpu_second * 3600)


def test_price_order_env_then_table_times_gpus_then_none():
    h100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "gpu_count": 2}
    assert report.machine_price(h100, {ENV: "1.5"}) == (1.5, ENV)
    price, source = report.machine_price(h100, {})
    assert price == pytest.approx(2 * 0.00116 * 3600) and "docs.runpod.io" in source and "x 2 GPU" in source
    assert report.machine_price({"type": "cuda", "name": "Some Future GPU", "gpu_count": 1}, {}) == (None, None)
    assert report.machine_price({"type": "cpu", "name": "x86_64", "gpu_count": 0}, {}) == (None, None)
    assert report.machine_price({"type": "cpu", "name": "x86_64", "gpu_count": 0}, {ENV: "0.2"}) == (0.2, ENV)


def test_record_times_phases_steps_and_prices_the_wall_seconds():
    record = report.RunRecord("p1")
    with record.phase("load"):
        time.sleep(0.05)
    with record.phase("sample"):
        for _ in range(3):
            time.sleep(0.02)
            record.step_done()
    with record.phase("load"):       # a second load (the sampler's reuse) adds to the first
        time.sleep(0.01)
    out = record.finish({ENV: "3.6"})
    names = [p["name"] for p in out["phases"]]
    assert names == ["load", "sample"]                       # canonical order, one entry per phase
    load, sample = out["phases"]
    assert load["seconds"] >= 0.06 and load["peak_gpu_bytes"] is None
    assert len(sample["step_seconds"]) == 3 and sum(sample["step_seconds"]) <= sample["seconds"] + 1e-6
    assert out["seconds"] >= load["seconds"] + sample["seconds"]
    assert out["cost_usd"] == out["seconds"] * 3.6 / 3600 and out["price_per_hour"] == 3.6
    assert out["device"]["type"] == "cpu" and out["device"]["gpu_count"] == 0
    assert out["plan"] is None and out["prompt_id"] == "p1"
    json.dumps(out)                                        # JSON-ready as it is
    line = report.summary(out)
    assert line.startswith("run report: ") and "load " in line and "cents at $3.6/h" in line
    assert "no price" in report.summary(report.RunRecord().finish({}))


def test_the_plan_is_taken_from_the_loaded_set_when_it_has_one():
    class Plan:
        def to_dict(self):
            return {"mode": "phase-wise"}

    class Loaded:
        plan = Plan()

    record = report.RunRecord()
    record.note_plan(Loaded())
    assert record.finish({})["plan"] == {"mode": "phase-wise"}
    record.note_plan(object())
    assert record.finish({})["plan"] is None


def test_json_is_written_whole_beside_the_video(tmp_path):
    target = report.report_path(tmp_path / "kiss_00001_.mp4")
    assert target.name == "kiss_00001_.json"
    report.write_json({"seconds": 1.0}, target)
    assert json.loads(target.read_text()) == {"seconds": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kiss_00001_.json"]   # no part file left


@pytest.mark.parametrize("fmt", ["h264-mp4", "webm"])
def test_late_metadata_is_tagged_after_encoding(tmp_path, fmt):
    frames = np.random.default_rng(0).random((5, 32, 48, 3), dtype=np.float32)
    calls = []

    def late():
        calls.append(sorted(p.name for p in tmp_path.iterdir()))   # runs with the encoded part file
        return {"wanvolume_report": {"seconds": 1.25}}

    path = video.write_video(frames, tmp_path / f"v.{video.FORMATS[fmt].extension}", fmt=fmt,
                             metadata={"prompt": {"1": "x"}}, late_metadata=late)
    tags = {k.lower(): v for k, v in video.read_metadata(path).items()}
    assert json.loads(tags["wanvolume_report"]) == {"seconds": 1.25}
    assert json.loads(tags["prompt"]) == {"1": "x"}
    assert calls and calls[0] == [video.part_path(path).name]
    assert video.probe(path).frames == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_failing_late_metadata_leaves_no_video(tmp_path):
    frames = np.zeros((3, 16, 16, 3), dtype=np.float32)

    def late():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        video.write_video(frames, tmp_path / "v.mp4", late_metadata=late)
    assert list(tmp_path.iterdir()) == []


def _fake_report(seconds: float, price: float, **settings) -> dict:
    record = report.RunRecord()
    out = record.finish({ENV: str(price)})
    out.update(seconds=seconds, cost_usd=seconds * price / 3600,
               device={"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "gpu_count": 1},
               phases=[{"name": "sample", "seconds": seconds - 1, "peak_gpu_bytes": 1}],
               settings={"steps": 4, "schedule": "distill_4step", "width": 832, "height": 480} | settings)
    return out


def test_report_costs_labels_measured_rows_and_estimates_the_rest(tmp_path, capsys):
    import sys
    from helpers import REPO

    sys.path.insert(0, str(REPO / "bench"))
    import report_costs

    (tmp_path / "sub").mkdir()
    report.write_json(_fake_report(10.0, 3.6), tmp_path / "a.json")
    report.write_json(_fake_report(12.0, 3.6), tmp_path / "sub" / "b.json")
    (tmp_path / "not_a_report.json").write_text('{"seconds": 1}')
    assert report_costs.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 run report(s) read")
    assert "| H100 | fast | 480p | 11.0 s | 10.0 s | $3.6/h | $0.011 | measured (2 runs) |" in out
    assert "| H100 | fast | 480p |" in out and out.count("| H100 | fast | 480p |") == 1
    assert "| H200 | fast | 480p |" in out and "estimated (DiT FLOPs)" in out
    assert report_costs.main([str(tmp_path), "--price-per-hour", "0.72", "--no-estimates"]) == 0
    out = capsys.readouterr().out
    assert "| H100 | fast | 480p | 11.0 s | 10.0 s | $0.72/h | $0.0022 | measured (2 runs) |" in out
    assert "estimated" not in out
