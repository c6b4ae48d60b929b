"""preload --workers N: files in parallel, with resume, exact manifest and marker-last kept."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from fake_hub import Fault, tiny_safetensors
from volume_fixtures import (FAST, cli, hub, models_dir, popen, reset_when_idle, run,  # noqa: F401
                             sha, shard_files, wait_for_part)

from wan_engine.store import manifest as mf
from wan_engine.errors import WanVolumeError
from wan_engine.store.fetch import part_path
from wan_engine.store.hub import HubError
from wan_engine.store.progress import TransferBars


def _shard_args(models_dir: Path, workers: int) -> tuple[str, ...]:
    return ("preload", "--repo", "acme/shards", "--models-dir", str(models_dir), *FAST,
            "--workers", str(workers))


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_download_that_many_files_at_once(hub, models_dir, workers):
    files = shard_files(4, 150_000)                     # 4 x 600 KB, 0.3 s each at 2 MB/s
    hub.add_repo("acme/shards", files)
    hub.state.throttle_bps = 2_000_000
    res = cli(*_shard_args(models_dir, workers))
    assert res.returncode == 0, res.stderr
    assert hub.state.max_in_flight == workers           # overlapping GETs, never more than N
    for name, data in files.items():
        assert (models_dir / "shards" / name).read_bytes() == data
        assert hub.served(name) == len(data)
    assert mf.is_marked_ready(models_dir, "shards")


def test_with_workers_the_largest_files_start_first(hub, models_dir):
    files = {f"shard-{i}.safetensors": tiny_safetensors(n, seed=i)
             for i, n in enumerate((50_000, 100_000, 150_000))}   # repo order: smallest first
    hub.add_repo("acme/shards", files)
    hub.state.throttle_bps = 2_000_000
    assert cli(*_shard_args(models_dir, 2)).returncode == 0
    started = [path.rsplit("/", 1)[-1] for method, path, _ in hub.state.requests
               if method == "GET" and "/resolve/" in path]
    assert set(started[:2]) == {"shard-2.safetensors", "shard-1.safetensors"}
    assert started[2] == "shard-0.safetensors"


def _bytes_on_volume(folder: Path, files: dict[str, bytes]) -> dict[str, int]:
    """Per file: its size when renamed into place, else the length of its part (0 if none)."""
    out = {}
    for name in files:
        final, part = folder / name, part_path(folder / name)
        out[name] = (final.stat().st_size if final.is_file() else
                     part.stat().st_size if part.is_file() else 0)
    return out


def _assert_manifest_lists_only_complete_files(models_dir: Path, files: dict[str, bytes]) -> int:
    path = mf.manifest_path(models_dir, "shards")
    entries = json.loads(path.read_text())["entries"] if path.exists() else []  # never half-written
    for e in entries:
        assert (models_dir / e["relpath"]).read_bytes() == files[e["repo_path"]], e["relpath"]
        assert e["sha256"] == sha(files[e["repo_path"]])
    assert not mf.marker_path(models_dir, "shards").exists()
    return len(entries)


def test_sigkills_with_parallel_parts_keep_manifest_exact_and_resume_each_part(hub, models_dir):
    files = shard_files(6, 600_000)                     # 6 x 2.4 MB; parts grow in 1 MiB steps
    hub.add_repo("acme/shards", files)
    hub.state.throttle_bps = 2_000_000
    folder, total = models_dir / "shards", sum(len(d) for d in files.values())
    parallel_parts = 0
    for step in (1, 2, 3):                              # kill at 20%, 40%, 60% of the repo
        proc = popen(*_shard_args(models_dir, 3))
        end = time.monotonic() + 30
        while sum(_bytes_on_volume(folder, files).values()) < total * step // 5:
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        parallel_parts = max(parallel_parts, len(list(folder.glob("*.part"))))
        _assert_manifest_lists_only_complete_files(models_dir, files)
    assert parallel_parts >= 2                          # the kills hit files in flight together
    before = _bytes_on_volume(folder, files)
    hub.state.throttle_bps = 0
    reset_when_idle(hub)
    res = cli(*_shard_args(models_dir, 3))
    assert res.returncode == 0, res.stderr
    for name, data in files.items():                    # each part resumed from its last byte
        assert hub.served(name) == len(data) - before[name], name
        assert (folder / name).read_bytes() == data
    assert _count_entries(models_dir) == len(files) and mf.is_marked_ready(models_dir, "shards")


def _count_entries(models_dir: Path) -> int:
    return len(mf.load_manifest(models_dir, "shards").entries)


def test_ctrl_c_stops_every_worker_and_keeps_their_parts(hub, models_dir):
    files = shard_files(3, 2_000_000)                   # 3 x 8 MB at 250 KB/s each: 32 s to finish,
    hub.add_repo("acme/shards", files)                  # room for a slow start on a busy machine
    hub.state.throttle_bps = 250_000
    folder = models_dir / "shards"
    proc = popen(*_shard_args(models_dir, 3))
    for name in files:
        wait_for_part(part_path(folder / name), 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=25)              # a hang guard, short of the 32 s to finish
    assert proc.returncode == 130 and "interrupted" in err, err
    # stopped, not waited for: every file is still a part (the files need ~30 s more)
    assert all(part_path(folder / n).is_file() and not (folder / n).exists() for n in files)
    assert not mf.marker_path(models_dir, "shards").exists()


def test_every_failed_file_is_named_and_the_others_finish(hub, models_dir):
    hub.fault("config.json", Fault("status", code=404))
    hub.fault("sub/weights.pth", Fault("status", code=404))
    res = cli("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST,
              "--workers", "3")
    assert res.returncode == 3
    assert "2 files failed" in res.stderr
    assert "tiny/config.json" in res.stderr and "tiny/sub/weights.pth" in res.stderr
    assert set(mf.load_manifest(models_dir, "tiny").entries) == {"tiny/model.safetensors"}
    assert not mf.marker_path(models_dir, "tiny").exists()


def test_after_a_failure_no_new_file_starts(hub, models_dir):
    hub.fault("config.json", Fault("status", code=404))    # the first file of three
    with pytest.raises(HubError, match="404"):
        run(models_dir, workers=1)
    assert hub.served() == 0                                 # one worker: nothing else started
    assert not mf.marker_path(models_dir, "tiny").exists()


def test_after_a_failure_queued_files_do_not_start_with_workers(hub, models_dir):
    hub.state.throttle_bps = 4_000_000                       # model.safetensors: 1 s in flight
    hub.fault("sub/weights.pth", Fault("status", code=404))  # largest first: model, weights | config
    with pytest.raises(HubError, match="404"):
        run(models_dir, workers=2)
    assert hub.served("config.json") == 0                    # queued behind them: never started
    assert set(mf.load_manifest(models_dir, "tiny").entries) == {"tiny/model.safetensors"}


def test_workers_below_one_is_a_usage_error(hub, models_dir):
    with pytest.raises(WanVolumeError, match="--workers"):
        run(models_dir, workers=0)


def test_manifest_writer_from_many_threads_keeps_every_entry(models_dir):
    writer = mf.ManifestWriter(models_dir, mf.Manifest("many"))

    def record(t: int) -> None:
        for i in range(15):
            writer.add(mf.ManifestEntry(f"f{t}-{i}", i, "0" * 64, "acme/many", "c" * 40))
    threads = [threading.Thread(target=record, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(mf.load_manifest(models_dir, "many").entries) == 8 * 15
    assert not list(mf.state_dir(models_dir).rglob("*.tmp"))


def test_progress_bars_from_many_threads_add_up(capsys):
    bar = TransferBars(8 * 2000, 8, enabled=True, slots=3)

    def one_file(i: int) -> None:
        file_bar = bar.start_file(f"f{i}", 2000, 0)
        for _ in range(2000):
            file_bar.update(1)
        file_bar.close()
    threads = [threading.Thread(target=one_file, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.total.n == 8 * 2000 and bar.done == 8
    assert sorted(bar._free) == list(range(1, bar._lines + 1))   # every screen line given back
    bar.close()
    assert "total (8/8 files)" in capsys.readouterr().err
