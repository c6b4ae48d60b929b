"""The fp8 upcast's choice of path: the one measured fastest for each (device type, fp8 dtype,
target dtype, scaled), once per process, logged with its figures; WAN_VOLUME_FP8_UPCAST overrides
it and is checked. Speeds are injected (a fake measurement): no test times anything."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from wan_engine.errors import InvalidInput
from wan_engine.load import fastload, upcast

E4M3, E5M2, BF16 = torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(upcast.ENV_UPCAST, raising=False)
    monkeypatch.setattr(upcast, "CALIBRATION_VALUES", 4096)
    upcast.forget_calibrations()
    yield
    upcast.forget_calibrations()


class FakeClock:
    """A measurement that runs each conversion (so its output is real) and says it took
    ``overhead + per_value * values`` seconds, as given for its path; records every call."""

    def __init__(self, per_value: dict[str, float], overhead: dict[str, float] | None = None) -> None:
        self.per_value, self.overhead, self.calls = per_value, overhead or {}, []

    def __call__(self, name, values, run) -> float:
        run()
        self.calls.append((name, values))
        return self.overhead.get(name, 0.0) + self.per_value[name] * values


@pytest.mark.parametrize("per_value, first", [({"cast": 1e-9, "table": 2e-9, "bits": 3e-9}, "cast"),
                                              ({"cast": 3e-9, "table": 1e-9, "bits": 2e-9}, "table"),
                                              ({"cast": 3e-9, "table": 2e-9, "bits": 5e-10}, "bits")])
def test_the_path_measured_fastest_comes_first(per_value, first):
    clock = FakeClock(per_value)
    cal = upcast.calibrate(E4M3, BF16, "cpu", True, measure=clock, rounds=3)
    assert cal.order()[0] == first == cal.order(1000)[0]
    assert cal.order() == tuple(sorted(per_value, key=per_value.get))
    assert cal.rate(first) == pytest.approx(1 / per_value[first])
    small, large = cal.sizes
    assert sorted(clock.calls) == sorted([(n, v) for n in upcast.PATHS for v in cal.sizes] * 3)  # each, each round
    assert [clock.calls[i * 6][0] for i in range(3)] == ["cast", "table", "bits"]   # rotated: none always first


def test_a_per_call_cost_moves_the_choice_with_the_size():
    """cast: no per-call cost, 10 ns a value; the bit move: 1 ms a call (a busy machine's thread
    wake-ups), 1 ns a value: cast for small tensors, the bit move for the loader's slices."""
    clock = FakeClock({"cast": 1e-8, "table": 5e-8, "bits": 1e-9}, {"bits": 1e-3})
    cal = upcast.calibrate(E4M3, BF16, "cpu", False, measure=clock)
    assert cal.costs["bits"].overhead_s == pytest.approx(1e-3) and cal.costs["bits"].per_value_s == pytest.approx(1e-9)
    assert cal.costs["cast"].overhead_s == pytest.approx(0, abs=1e-12)
    assert cal.order(16384)[0] == "cast" and cal.order()[0] == "bits"
    assert "using bits there" in cal.describe() and "(cast at " in cal.describe()


def test_best_round_counts_and_paths_that_cannot_apply_are_not_measured():
    times = {"cast": iter([5.0, 2.0]), "table": iter([1.0, 4.0])}   # each path's best round counts
    cal = upcast.calibrate(E5M2, BF16, "cpu", False, rounds=2, values=40000,
                           measure=lambda name, n, run: (run(), next(times[name]) if n > 20000 else 0.5)[1])
    assert set(cal.costs) == {"cast", "table"}  # no bit move for e5m2
    assert cal.costs == {"cast": upcast.PathCost.fit(*cal.sizes[:1], 0.5, cal.sizes[1], 2.0),
                         "table": upcast.PathCost.fit(*cal.sizes[:1], 0.5, cal.sizes[1], 1.0)}
    assert cal.order() == ("table", "cast")


def test_noise_that_makes_the_larger_run_faster_counts_all_per_value():
    assert upcast.PathCost.fit(100, 1.0, 1000, 0.5) == upcast.PathCost(0.0, 0.5 / 1000)
    assert upcast.PathCost.fit(100, 1.0, 1100, 2.0) == upcast.PathCost(0.9, 0.001)


def test_a_path_that_is_not_torchs_bits_is_left_out(monkeypatch, caplog):
    def off_by_one(src, out, scale):
        upcast.convert_by_table(src, out, scale)
        upcast.as_bits(out)[3] += 1
        return True

    monkeypatch.setitem(upcast._PATH_FN, "table", off_by_one)
    with caplog.at_level(logging.WARNING, logger=upcast.__name__):
        cal = upcast.calibrate(E4M3, BF16, "cpu", True, measure=FakeClock({"cast": 3e-9, "table": 1e-10, "bits": 2e-9}))
    assert cal.differs == ("table",) and cal.order() == ("bits", "cast")
    assert "table did not give torch's cast bit for bit" in caplog.text


def test_measured_once_per_key_logged_with_figures_and_used_by_convert(monkeypatch, caplog):
    clock = FakeClock({"cast": 1e-9, "table": 2e-9, "bits": 4e-9})
    monkeypatch.setattr(upcast, "timer", lambda device: clock)
    moves = []
    real_move = upcast._move_bits
    monkeypatch.setattr(upcast, "_move_bits", lambda raw, out, f: (moves.append(raw.numel()), real_move(raw, out, f)))
    src = (torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 0.05).to(E4M3)
    out, scale = torch.empty(5000, dtype=BF16), torch.tensor(0.25)
    with caplog.at_level(logging.INFO, logger=upcast.__name__):
        for _ in range(3):
            upcast.convert(src, out, scale)
    assert len(clock.calls) == 6 * upcast.CALIBRATION_ROUNDS          # measured once, not per call
    assert 5000 not in moves                                           # cast measured fastest: no bit move
    assert torch.equal(out, src.to(BF16) * scale.to(BF16))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1
    assert "float8_e4m3fn -> bfloat16 x scale on cpu" in lines[0] and "using cast" in lines[0]
    assert "M values/s" in lines[0] and upcast.ENV_UPCAST in lines[0]

    clock.per_value = {"cast": 4e-9, "table": 2e-9, "bits": 1e-9}      # another key measures again
    upcast.convert(src, out)
    assert len(clock.calls) == 12 * upcast.CALIBRATION_ROUNDS and 5000 in moves
    assert torch.equal(out, src.to(BF16))


def test_setting_overrides_the_measurement(monkeypatch):
    monkeypatch.setattr(upcast, "timer", lambda device: pytest.fail("measured despite the setting"))
    src = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(E4M3)
    for setting in ("cast", "table", "bits", " Bits "):
        monkeypatch.setenv(upcast.ENV_UPCAST, setting)
        out = torch.empty(256, dtype=BF16)
        upcast.convert(src, out, torch.tensor(0.5))
        assert torch.equal(upcast.as_bits(out), upcast.as_bits(src.to(BF16) * 0.5))


def test_bad_setting_names_the_variable_the_value_and_the_choices(monkeypatch, tmp_path):
    monkeypatch.setenv(upcast.ENV_UPCAST, "fastest")
    with pytest.raises(InvalidInput) as err:
        upcast.convert(torch.zeros(4, dtype=E4M3), torch.empty(4, dtype=BF16))
    text = str(err.value)
    assert text.startswith("WAN_VOLUME_FP8_UPCAST = 'fastest': is not an fp8 upcast path")
    assert "auto, cast, table, bits" in text and "Fix: set WAN_VOLUME_FP8_UPCAST to one of" in text
    assert upcast.upcast_setting({upcast.ENV_UPCAST: ""}) == "auto"
    # a load with fp8 weights fails at once, before reading, with the same message
    save_file({"w": torch.zeros(8, dtype=E4M3)}, str(tmp_path / "f.safetensors"))
    with pytest.raises(InvalidInput, match="WAN_VOLUME_FP8_UPCAST = 'fastest'"):
        fastload.load_file(tmp_path / "f.safetensors", dtype_for=lambda _k, _d: BF16)
    monkeypatch.setenv(upcast.ENV_UPCAST, "table")
    got = fastload.load_file(tmp_path / "f.safetensors", dtype_for=lambda _k, _d: BF16)
    assert torch.equal(got["w"], torch.zeros(8, dtype=BF16))


def test_real_calibration_checks_all_256_bytes_on_this_device():
    """A real (untimed-asserted) calibration on each device here: every path that applies is
    usable (torch's bits on all 256 bytes), the rates are positive, the choice one of them."""
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        for src, paths in ((E4M3, {"cast", "table", "bits"}), (E5M2, {"cast", "table"})):
            cal = upcast.calibration(src, torch.float16, device, True)
            assert set(cal.costs) == paths and cal.differs == ()
            assert all(cal.rate(n) > 0 for n in paths) and cal.order()[0] in paths
