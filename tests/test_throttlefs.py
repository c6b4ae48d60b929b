"""tests/throttlefs.py: a stream and the volume are held to their limits, requests wait, bytes are counted.

The bounds are generous (0.5x to 1.3x of the set MB/s): the point is which limit applies, not the
last percent; the machine may be busy."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from throttlefs import ThrottleFS, fuse_missing

MISSING = fuse_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"throttlefs needs FUSE: {MISSING}")
MB = 10**6


def _files(folder: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {name: os.urandom(size) for name, size in sizes.items()}
    for name, blob in data.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    return data


def _read_together(paths: list[Path]) -> tuple[list[bytes], float]:
    """Each path read whole by its own thread (one stream each), all at once; the wall seconds."""
    out: list[bytes] = [b""] * len(paths)

    def read(i: int) -> None:
        with open(paths[i], "rb", buffering=0) as fh:
            out[i] = fh.read()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(paths))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.monotonic() - started


@pytest.mark.parametrize("stream,volume,streams,expect_mbps", [
    (8, 0, 1, 8),       # one stream at its limit
    (8, 0, 3, 24),      # three streams: three times one (no volume limit)
    (8, 12, 3, 12),     # three streams, the volume caps them
    (0, 8, 3, 8),       # the volume limit alone: shared, however many streams
])
def test_limits_apply_per_stream_and_per_volume(tmp_path, stream, volume, streams, expect_mbps):
    size = int(expect_mbps / streams * 1.5 * MB)    # ~1.5 s of reading
    data = _files(tmp_path / "src", {f"f{i}.bin": size for i in range(streams)})
    with ThrottleFS(tmp_path / "src", tmp_path / "mnt", stream_mbps=stream, volume_mbps=volume) as fs:
        got, seconds = _read_together([tmp_path / "mnt" / name for name in data])
        served = fs.counters()
    assert got == list(data.values())
    mbps = streams * size / seconds / MB
    assert 0.5 * expect_mbps <= mbps <= 1.3 * expect_mbps, (mbps, expect_mbps)
    assert served.bytes_served == streams * size and served.opens == streams


def test_counts_bytes_requests_and_opens_and_adds_latency(tmp_path):
    data = _files(tmp_path / "src", {"a.bin": 3 * MB + 17, "sub/b.bin": 1000})
    with ThrottleFS(tmp_path / "src", tmp_path / "mnt", latency_ms=100) as fs:
        assert sorted(os.listdir(tmp_path / "mnt")) == ["a.bin", "sub"]
        assert fs.counters().bytes_served == 0
        started = time.monotonic()
        assert (tmp_path / "mnt" / "a.bin").read_bytes() == data["a.bin"]
        seconds = time.monotonic() - started
        with open(tmp_path / "mnt" / "sub" / "b.bin", "rb") as fh:
            fh.seek(500)
            assert fh.read() == data["sub/b.bin"][500:]
        served = fs.counters()
        with pytest.raises(OSError):
            open(tmp_path / "mnt" / "a.bin", "r+b")
    assert served.bytes_served == 3 * MB + 17 + 500
    assert served.opens == 2 and served.requests >= 4          # 1 MiB requests at most
    assert seconds >= 0.1 * 4 * 0.9                            # each request waited its 100 ms
    assert not os.path.ismount(tmp_path / "mnt")


def test_cache_mode_serves_a_file_once_until_remounted(tmp_path):
    """cache=True (the bench's mode: a prefetch warms later reads) keeps the page cache until unmount."""
    data = _files(tmp_path / "src", {"a.bin": 2 * MB})
    with ThrottleFS(tmp_path / "src", tmp_path / "mnt", stream_mbps=64, cache=True) as fs:
        for _ in range(2):
            assert (tmp_path / "mnt" / "a.bin").read_bytes() == data["a.bin"]
        once = fs.counters().bytes_served
        fs.remount()
        assert (tmp_path / "mnt" / "a.bin").read_bytes() == data["a.bin"]
        twice = fs.counters().bytes_served
    assert once == 2 * MB and twice == 4 * MB


def test_latency_holds_back_a_lone_stream_and_parallel_streams_fill_the_gaps(tmp_path):
    """1 MiB requests at 8 MB/s take 0.13 s; 0.13 s of latency each halves a lone stream's rate,
    while two streams keep the volume busy: the case where parallel readers pay without a
    per-stream limit."""
    data = _files(tmp_path / "src", {"a.bin": 4 * MB, "b.bin": 4 * MB})
    with ThrottleFS(tmp_path / "src", tmp_path / "mnt", volume_mbps=8, latency_ms=131) as fs:
        _, one = _read_together([tmp_path / "mnt" / "a.bin"])
        _, two = _read_together([tmp_path / "mnt" / "a.bin", tmp_path / "mnt" / "b.bin"])
        assert fs.counters().bytes_served == 12 * MB
    lone, both = 4 * MB / one / MB, 8 * MB / two / MB
    assert 2 <= lone <= 5.2 and both > 1.4 * lone, (lone, both)
