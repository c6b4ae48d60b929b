"""readahead.py: the set read once, in the order the load takes it, ahead of the load and no further
than its window; off where the volume keeps no page cache; the same tensors as a load alone.

The FUSE tests serve a tiny set through tests/throttlefs.py and count the bytes it served."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from throttlefs import ThrottleFS, fuse_missing
from wan_engine.errors import InvalidInput
from wan_engine.load import assemble, readahead, readers
from wan_engine.store import find as volume
from wan_engine.tiny_model import TINY_SET_NAME

MB = 2**20
FUSE = fuse_missing()


@pytest.fixture(autouse=True)
def _fresh():
    readers.forget()
    assemble.release()
    yield
    assemble.release()
    readers.forget()


def test_setting_values_and_a_bad_one_named_with_its_fix():
    assert readahead.setting({}) and readahead.setting({"WAN_VOLUME_READAHEAD": " Auto "})
    assert not readahead.setting({"WAN_VOLUME_READAHEAD": "off"})
    with pytest.raises(InvalidInput) as err:
        readahead.setting({"WAN_VOLUME_READAHEAD": "fast"})
    msg = str(err.value)
    assert "WAN_VOLUME_READAHEAD" in msg and "'fast'" in msg and "=off" in msg


def test_load_order_lists_every_file_once_encoders_before_the_dit(volume_env):
    found = volume.get_model_set(TINY_SET_NAME)
    order = readahead.load_order(found)
    assert sorted(order) == sorted(f for f in found.files() if f.is_file())
    assert len(order) == len(set(order))
    comp = [f.relative_to(found.root).parts[0] for f in order]
    dit = comp.index("transformer")
    assert {"text_encoder", "image_encoder", "vae"} <= set(comp[:dit]), comp
    assert set(comp[dit:]) == {"transformer"}, comp


def test_window_holds_the_read_ahead_back_until_the_load_catches_up(tmp_path, monkeypatch):
    monkeypatch.setattr(readahead, "SPAN_BYTES", MB)
    data = tmp_path / "big.bin"
    data.write_bytes(bytes(12 * MB))
    consumed = [0]
    ahead = readahead.ReadAhead([data], window=3 * MB, consumed=lambda: consumed[0])
    with ahead:
        deadline = time.monotonic() + 30
        while ahead.ahead < 3 * MB and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        held = ahead.ahead
        assert 3 * MB <= held <= 3 * MB + readers.FALLBACK_READERS * MB, held   # a span per reader at most
        consumed[0] = 12 * MB
        deadline = time.monotonic() + 30
        while ahead.ahead < 12 * MB and time.monotonic() < deadline:
            time.sleep(0.01)
        ahead.finish()
    assert ahead.ahead == 12 * MB and not ahead.no_cache


def _state(loaded) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in ("transformer", "text_encoder", "image_encoder", "vae")
            for k, v in getattr(loaded.pipe, name).state_dict().items()}


def test_same_tensors_with_and_without_the_read_ahead(volume_env, monkeypatch):
    found = volume.get_model_set(TINY_SET_NAME)
    monkeypatch.setenv(readahead.ENV_READAHEAD, "off")
    alone = {k: v.clone() for k, v in _state(assemble.load(found, "bf16")).items()}
    assemble.release()
    monkeypatch.setenv(readahead.ENV_READAHEAD, "on")
    ahead = _state(assemble.load(found, "bf16"))
    assert alone.keys() == ahead.keys()
    for key, tensor in alone.items():
        assert torch.equal(tensor, ahead[key]), key


@pytest.mark.skipif(bool(FUSE), reason=FUSE or "")
def test_every_byte_served_once_through_a_cached_network_like_mount(tiny_volume, tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(tiny_volume, src)
    with ThrottleFS(src, tmp_path / "mnt", stream_mbps=40, volume_mbps=80, latency_ms=1, cache=True) as fs:
        monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(tmp_path / "mnt"))
        found = volume.get_model_set(TINY_SET_NAME)
        size = found.size_bytes()
        before = fs.counters().bytes_served
        assemble.load(found, "bf16")
        served = fs.counters().bytes_served - before
    assert size <= served <= 1.02 * size, (served, size)


@pytest.mark.skipif(bool(FUSE), reason=FUSE or "")
def test_a_mount_without_page_cache_stops_the_read_ahead_after_its_first_ranges(tmp_path, monkeypatch):
    monkeypatch.setattr(readahead, "SPAN_BYTES", MB)
    monkeypatch.setattr(readers, "RANGE_BYTES", 2 * MB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(bytes(40 * MB))
    with ThrottleFS(src, tmp_path / "mnt", volume_mbps=200) as fs:      # direct_io: nothing cached
        ahead = readahead.ReadAhead([tmp_path / "mnt" / "a.bin"], consumed=lambda: 0)
        with ahead:
            ahead._threads[0].join(timeout=60)       # the reading thread ends by itself
            assert not ahead._threads[0].is_alive()
            ahead.finish()
        served = fs.counters().bytes_served
    assert ahead.no_cache
    assert served <= (readers.FALLBACK_READERS + 1) * 2 * MB, served      # a range per reader, not 40 MB


def test_the_load_waits_for_the_read_ahead_only_where_it_can_go_on(tmp_path, monkeypatch):
    """wait_for holds a read of a span the read-ahead has not read, lets it go once the span is
    marked, and never holds a read while the read-ahead waits on its window or for another file."""
    import threading
    monkeypatch.setattr(readahead, "SPAN_BYTES", MB)
    data, other = tmp_path / "a.bin", tmp_path / "b.bin"
    data.write_bytes(bytes(3 * MB))
    other.write_bytes(bytes(10))
    ahead = readahead.ReadAhead([data], window=MB)          # not started: nothing is read ahead

    def waiter(*span) -> threading.Thread:
        thread = threading.Thread(target=ahead.wait_for, args=(data, *span), daemon=True)
        thread.start()
        return thread

    held = waiter(MB + 10, 2 * MB + 10)                       # spans 1 and 2
    time.sleep(0.3)
    assert held.is_alive()
    ahead.mark(data, MB)
    time.sleep(0.3)
    assert held.is_alive(), "span 2 is not read yet"
    ahead.mark(data, 2 * MB)
    held.join(timeout=10)
    assert not held.is_alive()
    ahead.wait_for(other, 0, 10)                              # not the read-ahead's file: no wait
    window = waiter(0, 10)
    ahead._holding = 1                                        # the read-ahead waits on its window
    ahead._wake()
    window.join(timeout=10)
    assert not window.is_alive()
