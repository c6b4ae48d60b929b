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
    """A measurement that runs each conversion (so its output is real) and says it took the
    seconds given for its path; records every call."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, name, run) -> float:
        run()
        self.calls.append(name)
        return self.seconds[name]


@pytest.mark.parametrize("seconds, first", [({"cast": 1.0, "table": 2.0, "bits": 3.0}, "cast"),
                                            ({"cast": 3.0, "table": 1.0, "bits": 2.0}, "table"),
                                            ({"cast": 3.0, "table": 2.0, "bits": 0.5}, "bits")])
def test_the_path_measured_fastest_comes_first(seconds, first):
    clock = FakeClock(seconds)
    cal = upcast.calibrate(E4M3, BF16, "cpu", True, measure=clock, rounds=3)
    assert cal.order[0] == first
    assert cal.order == tuple(sorted(seconds, key=seconds.get))
    assert cal.rates == {n: cal.values / s for n, s in seconds.items()}
    assert sorted(clock.calls) == sorted(upcast.PATHS * 3)                  # each path, each round
    assert [clock.calls[i * 3] for i in range(3)] == ["cast", "table", "bits"]   # rotated: none always first


def test_best_round_counts_and_paths_that_cannot_apply_are_not_measured():
    times = iter([5.0, 1.0, 4.0, 2.0])          # cast, table, table, cast: each path's best round counts
    cal = upcast.calibrate(E5M2, BF16, "cpu", False, rounds=2,
                           measure=lambda name, run: (run(), next(times))[1])
    assert set(cal.rates) == {"cast", "table"}  # no bit move for e5m2
    assert cal.order == ("table", "cast") and cal.rates["cast"] == cal.values / 2.0


def test_a_path_that_is_not_torchs_bits_is_left_out(monkeypatch, caplog):
    def off_by_one(src, out, scale):
        upcast.convert_by_table(src, out, scale)
        upcast.as_bits(out)[3] += 1
        return True

    monkeypatch.setitem(upcast._PATH_FN, "table", off_by_one)
    with caplog.at_level(logging.WARNING, logger=upcast.__name__):
        cal = upcast.calibrate(E4M3, BF16, "cpu", True, measure=FakeClock({"cast": 3.0, "table": 0.1, "bits": 2.0}))
    assert cal.differs == ("table",) and cal.order == ("bits", "cast")
    assert "table did not give torch's cast bit for bit" in caplog.text


def test_measured_once_per_key_logged_with_figures_and_used_by_convert(monkeypatch, caplog):
    clock = FakeClock({"cast": 1.0, "table": 2.0, "bits": 4.0})
    monkeypatch.setattr(upcast, "timer", lambda device: clock)
    moves = []
    real_move = upcast._move_bits
    monkeypatch.setattr(upcast, "_move_bits", lambda raw, out, f: (moves.append(raw.numel()), real_move(raw, out, f)))
    src = (torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 0.05).to(E4M3)
    out, scale = torch.empty(5000, dtype=BF16), torch.tensor(0.25)
    with caplog.at_level(logging.INFO, logger=upcast.__name__):
        for _ in range(3):
            upcast.convert(src, out, scale)
    assert len(clock.calls) == 3 * upcast.CALIBRATION_ROUNDS          # measured once, not per call
    assert 5000 not in moves                                           # cast measured fastest: no bit move
    assert torch.equal(out, src.to(BF16) * scale.to(BF16))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1
    assert "float8_e4m3fn -> bfloat16 x scale on cpu" in lines[0] and "using cast" in lines[0]
    assert "M values/s" in lines[0] and upcast.ENV_UPCAST in lines[0]

    clock.seconds = {"cast": 4.0, "table": 2.0, "bits": 1.0}           # another key measures again
    upcast.convert(src, out)
    assert len(clock.calls) == 6 * upcast.CALIBRATION_ROUNDS and 5000 in moves
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
            assert set(cal.rates) == paths and cal.differs == ()
            assert all(rate > 0 for rate in cal.rates.values()) and cal.order[0] in paths
