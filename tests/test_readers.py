"""readers.py: ranges cover every tensor once; the reader count is measured on the volume (1 when only
the volume is limited, more when each stream is), every byte is read once, the tensors are exact.

The FUSE tests read ~48 MB through tests/throttlefs.py at 8 to 64 MB/s (seconds each); the only
timing they check is the chooser's own comparison, which the throttle makes 4x apart."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from throttlefs import ThrottleFS, fuse_missing
from wan_engine.errors import InvalidInput
from wan_engine.load import fastload, pagecache, readers

MB = 10**6
FUSE = fuse_missing()


@pytest.fixture(autouse=True)
def _fresh_choices():
    readers.forget()
    yield
    readers.forget()


def _bf16(_k, dt):
    return torch.bfloat16 if dt.is_floating_point else dt


SHAPES = {
    "many small": {f"w{i}": torch.randn(3, 5 + i) for i in range(50)},
    "one big": {"big": torch.randn(700, 300)},
    "big between small": {"a": torch.randn(4), "big": torch.randn(500, 400), "b": torch.arange(7),
                          "c": torch.randn(2, 2).half()},
    "empty and scalar": {"e": torch.empty(0, 3), "s": torch.tensor(1.5), "w": torch.randn(90, 90)},
}


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("range_bytes", [1, 4000, 100_000, 10**9])
def test_ranges_cover_every_wanted_tensor_once_in_file_order(tmp_path, kind, range_bytes):
    path = tmp_path / "m.safetensors"
    save_file(SHAPES[kind], str(path))
    wanted = fastload._wanted(path, lambda k: None if k == "b" else k)
    ranges = readers.split(path, wanted, range_bytes)
    assert [item for r in ranges for item in r.items] == wanted          # each once, in order
    assert all(r.path == path and r.items for r in ranges)
    assert all(r.nbytes >= range_bytes for r in ranges[:-1])             # only the last may be short
    for r in ranges:                                                     # whole tensors, no overlap
        spans = [span for span, _ in r.items]
        assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("workers", [1, 3, None])
def test_ranges_load_exactly_what_safetensors_loads(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(readers, "RANGE_BYTES", 5000)      # many ranges, one file read by 3 threads
    paths = []
    for kind, sd in SHAPES.items():
        paths.append(tmp_path / f"{len(paths)}.safetensors")
        save_file({f"{kind}.{k}": v for k, v in sd.items()}, str(paths[-1]))
    got = fastload.load_files(paths, dtype_for=_bf16, workers=workers)
    want = {k: v.to(_bf16(k, v.dtype)) for p in paths for k, v in load_file(str(p)).items()}
    assert list(got) == list(want)                          # file order, as one reader would give
    assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)


def test_ranges_read_by_threads_under_inference_mode(tmp_path, monkeypatch):
    """ComfyUI loads under inference mode; reader threads (not in it) convert what they make."""
    monkeypatch.setattr(readers, "RANGE_BYTES", 3000)
    sd = {f"w{i}": torch.randn(40, 30) for i in range(12)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    with torch.inference_mode():
        got = fastload.load_files([tmp_path / "m.safetensors"], dtype_for=_bf16, workers=4)
        got.update({f"x.{k}": v * 2 for k, v in got.items()})      # usable in the caller's mode
    assert all(torch.equal(got[k], v.to(torch.bfloat16)) for k, v in sd.items())


def test_pick_needs_a_clear_margin():
    assert readers.pick({1: 240, 2: 260, 4: 270}) == 1
    assert readers.pick({1: 240, 2: 470, 4: 900}) == 4
    assert readers.pick({1: 240, 2: 470, 4: 480}) == 2
    assert readers.pick({1: 240, 2: 250, 4: 320}) == 4      # beats 1 by 33 % though 2 did not


@pytest.mark.parametrize("raw,want", [(None, None), ("", None), ("auto", None), (" AUTO ", None),
                                      ("1", 1), ("8", 8), ("64", 64)])
def test_setting_values(raw, want):
    assert readers.readers_setting({} if raw is None else {"WAN_VOLUME_READERS": raw}) == want


@pytest.mark.parametrize("raw", ["0", "-2", "65", "four", "2.5", "auto4"])
def test_a_bad_setting_names_the_variable_the_value_and_the_allowed_values(tmp_path, monkeypatch, raw):
    with pytest.raises(InvalidInput) as err:
        readers.readers_setting({"WAN_VOLUME_READERS": raw})
    msg = str(err.value)
    assert msg.startswith(f"WAN_VOLUME_READERS = {raw!r}: ") and "auto" in msg and "1 to 64" in msg, msg
    path = tmp_path / "x.safetensors"
    save_file({"w": torch.randn(3)}, str(path))
    monkeypatch.setenv("WAN_VOLUME_READERS", raw)
    with pytest.raises(InvalidInput, match="WAN_VOLUME_READERS"):   # before any read
        fastload.load_files([path])


def _model(folder: Path) -> Path:
    """One ~48 MB file (fp32, tensors of 0.2 to 1.6 MB): one big file, as ComfyUI's DiT is."""
    gen = torch.Generator().manual_seed(0)
    sd = {f"blocks.{i}.w": torch.randn(400 + 97 * (i % 5), 1000, generator=gen) for i in range(20)}
    sd.update({f"blocks.{i}.b": torch.randn(50_000, generator=gen) for i in range(20)})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "dit.safetensors"))
    return folder / "dit.safetensors"


@pytest.mark.skipif(FUSE is not None, reason=f"needs FUSE for tests/throttlefs.py: {FUSE}")
@pytest.mark.parametrize("stream_mbps,volume_mbps,more", [(0, 8, False), (8, 64, True)],
                         ids=["volume limit only", "stream limit"])
def test_the_count_is_measured_on_the_volume_and_nothing_is_read_twice(
        tmp_path, monkeypatch, caplog, stream_mbps, volume_mbps, more):
    monkeypatch.setattr(readers, "RANGE_BYTES", 1 * MB)
    monkeypatch.setattr(readers, "PROBE_BYTES", 3 * MB)     # probes read 3 (untimed) + 3 + 6 + 12 MB of the 48
    monkeypatch.setattr(readers, "MIN_PROBE_BYTES", 1 * MB)
    monkeypatch.delenv("WAN_VOLUME_READERS", raising=False)
    src = _model(tmp_path / "src")
    want = {k: v.to(torch.bfloat16) for k, v in load_file(str(src)).items()}
    with ThrottleFS(src.parent, tmp_path / "mnt", stream_mbps=stream_mbps, volume_mbps=volume_mbps) as fs:
        path = tmp_path / "mnt" / src.name
        with caplog.at_level(logging.INFO, logger=readers.__name__):
            got = fastload.load_files([path], dtype_for=_bf16)
        served = fs.counters().bytes_served
        choice = readers.remembered(path)
    assert served <= 1.02 * src.stat().st_size, (served, src.stat().st_size)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert choice is not None and list(choice.rates) == [1, 2, 4]
    print(f"\nstream {stream_mbps} MB/s, volume {volume_mbps} MB/s: {choice.describe()}")
    assert (choice.readers > 1) == more, choice.describe()
    if more:     # each stream gets 8 MB/s: 4 readers could read 4x one (the margin asks for 1.15x)
        assert choice.rates[4] > 1.5 * choice.rates[1], choice.describe()
    logged = [r.getMessage() for r in caplog.records if r.name == readers.__name__]
    assert any(re.match(r"readers: \d \(1: \d+ MB/s, 2: \d+ MB/s, 4: \d+ MB/s\)", m) for m in logged), logged


@pytest.mark.skipif(FUSE is not None, reason=f"needs FUSE for tests/throttlefs.py: {FUSE}")
def test_a_remembered_count_is_used_without_measuring_again(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "RANGE_BYTES", 1 * MB)
    monkeypatch.setattr(readers, "PROBE_BYTES", 3 * MB)
    monkeypatch.setattr(readers, "MIN_PROBE_BYTES", 1 * MB)
    src = _model(tmp_path / "src")
    with ThrottleFS(src.parent, tmp_path / "mnt", stream_mbps=32) as fs:
        path = tmp_path / "mnt" / src.name
        fastload.load_files([path])
        first = readers.remembered(path)
        calls = []
        monkeypatch.setattr(readers, "_measure", lambda *a: calls.append(a))
        again = fastload.load_files([path])
        served = fs.counters().bytes_served
    assert first is not None and calls == []
    assert served <= 2 * 1.02 * src.stat().st_size
    assert all(torch.equal(again[k], v) for k, v in load_file(str(src)).items())


def test_a_load_already_in_the_page_cache_is_not_measured(tmp_path, monkeypatch):
    """A just-written local file is in the page cache: timing it would measure memory (a prefetch's
    bytes), so the count is not chosen there, nor remembered for the filesystem."""
    monkeypatch.setattr(readers, "RANGE_BYTES", 1 * MB)
    monkeypatch.setattr(readers, "PROBE_BYTES", 3 * MB)
    monkeypatch.setattr(readers, "MIN_PROBE_BYTES", 1 * MB)
    monkeypatch.delenv("WAN_VOLUME_READERS", raising=False)
    path = _model(tmp_path)
    (tmp_path / "dit.safetensors").read_bytes()
    files = [(path, fastload._wanted(path, None))]
    assert pagecache.cached_share(files, 20 * MB) == 1.0
    got = fastload.load_files([path])
    assert readers.remembered(path) is None
    assert all(torch.equal(got[k], v) for k, v in load_file(str(path)).items())


@pytest.mark.skipif(FUSE is not None, reason=f"needs FUSE for tests/throttlefs.py: {FUSE}")
def test_page_cache_share_on_a_network_like_mount(tmp_path):
    src = _model(tmp_path / "src")
    for cache in (False, True):
        with ThrottleFS(src.parent, tmp_path / "mnt", cache=cache) as fs:
            path = tmp_path / "mnt" / src.name
            files = [(path, fastload._wanted(path, None))]
            assert pagecache.cached_share(files, 40 * MB) == 0.0         # cold (direct_io: never cached)
            path.read_bytes()
            assert pagecache.cached_share(files, 40 * MB) == (1.0 if cache else 0.0)
            assert fs.counters().bytes_served <= 1.02 * src.stat().st_size   # asking read nothing
