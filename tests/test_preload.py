"""preload: manifest pinned to the commit, resume after SIGKILL, faults, one writer, clear failures,
parallel downloads (--workers) keeping every one of those guarantees."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from fake_hub import Fault, tiny_safetensors
from volume_fixtures import (cli, fast_policy, hub, models_dir, popen, shard_files,  # noqa: F401
                             tiny_repo_files)

from nodes.engine import manifest as mf
from nodes.engine import preload as pl
from nodes.engine import profiles
from nodes.engine.errors import WanVolumeError
from nodes.engine.fetch import FetchFailed, part_path
from nodes.engine.hub import HubError
from nodes.engine.progress import Progress

TINY = profiles.repo_source("acme/tiny")
FAST = ["--read-timeout", "1", "--retry-backoff", "0.01", "-q"]
WORKERS = pytest.mark.parametrize("workers", [1, 3], ids=["workers1", "workers3"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(models_dir: Path, sources=(TINY,), name: str = "tiny",
        workers: int = 1) -> pl.PreloadReport:
    return pl.preload(name, sources, models_dir, policy=fast_policy(), show_progress=False,
                      workers=workers)


def test_manifest_pinned_to_commit_and_marker_written(hub, models_dir):
    report = run(models_dir)
    commit = hub.state.repos["acme/tiny"].commit
    man = mf.load_manifest(models_dir, "tiny")
    files = tiny_repo_files()
    assert {e.relpath for e in man.entries.values()} == {f"tiny/{p}" for p in files}
    for e in man.entries.values():
        assert e.revision == commit and e.repo == "acme/tiny"
        assert e.sha256 == sha(files[e.repo_path])
        assert (models_dir / e.relpath).read_bytes() == files[e.repo_path]
    assert man.sources[0].commit == commit and man.sources[0].requested == "main"
    assert mf.is_marked_ready(models_dir, "tiny")
    assert not list(models_dir.rglob("*.part"))
    assert report.bytes_fetched == sum(len(b) for b in files.values())
    assert "TOTAL" in report.summary()


def test_rerun_of_complete_set_fetches_nothing(hub, models_dir):
    run(models_dir)
    hub.reset_counts()
    report = run(models_dir)
    assert hub.served() == 0
    assert {r.action for r in report.results} == {"kept"}


def test_cli_repo_lands_in_name_folder_with_summary(hub, models_dir):
    res = cli("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST)
    assert res.returncode == 0, res.stderr
    assert (models_dir / "tiny" / "model.safetensors").is_file()
    assert "TOTAL" in res.stdout and "fetched" in res.stdout


def test_profile_maps_repo_folders_to_volume_layout(hub, models_dir):
    split = "split_files/"
    comfy = {f"{split}diffusion_models/wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors": tiny_safetensors(10),
             f"{split}diffusion_models/wan2.1_i2v_720p_14B_bf16.safetensors": tiny_safetensors(20),
             f"{split}text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": tiny_safetensors(11),
             f"{split}clip_vision/clip_vision_h.safetensors": tiny_safetensors(12),
             f"{split}vae/wan_2.1_vae.safetensors": tiny_safetensors(13)}
    hub.add_repo(profiles.COMFY_REPO, comfy)
    hub.add_repo(profiles.DIFFUSERS_720P, {"tokenizer/spiece.model": b"sp" * 50,
                                           "tokenizer/tokenizer.json": b"{}",
                                           "transformer/config.json": b"{}"})
    p = profiles.get_profile("comfy-720p-fp8")
    run(models_dir, p.sources, p.name)
    got = {e.relpath for e in mf.load_manifest(models_dir, p.name).entries.values()}
    assert got == {"diffusion_models/wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors",
                   "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                   "clip_vision/clip_vision_h.safetensors", "vae/wan_2.1_vae.safetensors",
                   "tokenizers/umt5-xxl/spiece.model", "tokenizers/umt5-xxl/tokenizer.json"}
    assert all((models_dir / r).is_file() for r in got)


def _wait_for_part(path: Path, at_least: int, proc, timeout: float = 30) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and path.stat().st_size >= at_least:
            return path.stat().st_size
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {at_least} bytes")


def _reset_when_idle(hub, timeout: float = 10) -> None:
    """Reset the byte counts once the fake Hub stopped writing to killed clients' sockets."""
    end = time.monotonic() + timeout
    while hub.state.in_flight and time.monotonic() < end:
        time.sleep(0.01)
    assert hub.state.in_flight == 0
    hub.reset_counts()


@WORKERS
def test_sigkill_mid_file_then_rerun_fetches_only_what_was_missing(hub, models_dir, workers):
    files = tiny_repo_files()
    size = len(files["model.safetensors"])
    hub.state.throttle_bps = 2_000_000
    args = ("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST,
            "--workers", str(workers))
    proc = popen(*args)
    part = models_dir / "tiny" / "model.safetensors.part"
    _wait_for_part(part, size // 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    have = part.stat().st_size
    assert 0 < have < size
    assert (models_dir / "tiny" / "config.json").is_file()       # completed before the kill
    assert not mf.is_marked_ready(models_dir, "tiny")
    assert "tiny/model.safetensors" not in mf.load_manifest(models_dir, "tiny").entries
    not_ready = cli("check", "--models-dir", str(models_dir))
    assert not_ready.returncode == 1
    assert "preload --repo acme/tiny" in not_ready.stdout
    hub.state.throttle_bps = 0
    _reset_when_idle(hub)
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert hub.served("config.json") == 0
    assert hub.served("model.safetensors") == size - have
    assert ("GET", f"/_cdn/acme/tiny/{sha(files['model.safetensors'])}/model.safetensors",
            f"bytes={have}-") in hub.state.requests
    assert sha((models_dir / "tiny" / "model.safetensors").read_bytes()) == sha(files["model.safetensors"])
    assert "resumed" in res.stdout
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0


@pytest.mark.parametrize("fault", [Fault("drop", after=300_000), Fault("reset", after=200_000),
                                   Fault("status", code=503), Fault("status", code=500),
                                   Fault("stall", after=100_000, seconds=5)],
                         ids=["drop", "reset", "503", "500", "stall"])
@WORKERS
def test_transient_faults_are_retried(hub, models_dir, fault, workers):
    hub.fault("model.safetensors", fault, fault)
    report = run(models_dir, workers=workers)
    result = next(r for r in report.results if r.relpath == "tiny/model.safetensors")
    assert result.retries == 2
    data = tiny_repo_files()["model.safetensors"]
    assert (models_dir / result.relpath).read_bytes() == data
    assert hub.served("model.safetensors") == len(data) + 2 * fault.after  # resumed, not restarted


def test_metadata_5xx_is_retried(hub, models_dir, monkeypatch):
    monkeypatch.setattr("nodes.engine.hub.time.sleep", lambda s: None)
    hub.state.api_faults.extend([500, 503])
    run(models_dir)
    assert mf.is_marked_ready(models_dir, "tiny")


@WORKERS
def test_hash_mismatch_is_fetched_again(hub, models_dir, workers):
    data = tiny_repo_files()["model.safetensors"]
    hub.fault("model.safetensors", Fault("corrupt", offset=len(data) // 2))
    run(models_dir, workers=workers)
    assert (models_dir / "tiny/model.safetensors").read_bytes() == data
    assert hub.served("model.safetensors") == 2 * len(data)


@WORKERS
def test_hash_that_never_matches_is_never_accepted(hub, models_dir, workers):
    hub.fault("model.safetensors", *[Fault("corrupt", offset=100)] * 3)
    with pytest.raises(FetchFailed, match="SHA-256"):
        run(models_dir, workers=workers)
    assert not (models_dir / "tiny/model.safetensors").exists()
    assert not mf.is_marked_ready(models_dir, "tiny")
    assert "tiny/model.safetensors" not in mf.load_manifest(models_dir, "tiny").entries


def test_two_concurrent_preloads_write_each_file_once(hub, models_dir):
    hub.state.throttle_bps = 1_500_000           # ~3 s for the big file: the lock is held meanwhile
    args = ("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST)
    first = popen(*args)
    _wait_for_part(models_dir / "tiny" / "model.safetensors.part", 1, first)
    busy = cli(*args, "--no-wait")
    assert busy.returncode == 5 and "another preload" in busy.stderr
    second = popen(*args)
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    for path, data in tiny_repo_files().items():
        assert hub.served(path) == len(data)        # fetched once, by the first writer
    assert "kept" in outs[1][0]


def test_gated_repo_401_says_set_token_and_accept_licence(hub, models_dir):
    hub.state.repo_status["acme/tiny"] = 401
    res = cli("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST)
    assert res.returncode == 3
    assert "HF_TOKEN" in res.stderr and "licence" in res.stderr and "acme/tiny" in res.stderr
    assert not (models_dir / "tiny").exists()


def test_unknown_repo_404(hub, models_dir):
    with pytest.raises(HubError, match="no such repo"):
        run(models_dir, (profiles.repo_source("acme/nope"),), "nope")
    res = cli("preload", "--repo", "acme/nope", "--models-dir", str(models_dir), *FAST)
    assert res.returncode == 3 and "no such repo" in res.stderr


def test_not_enough_free_space_fails_before_writing(hub, models_dir):
    res = cli("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST,
              env={pl.ENV_FREE_BYTES: "1000"})
    assert res.returncode == 4
    assert "free" in res.stderr and "grow the network volume" in res.stderr
    assert hub.served() == 0 and not (models_dir / "tiny").exists()


def test_read_only_volume_is_reported(hub, models_dir, monkeypatch):
    import errno

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(pl.os, "open", refuse)
    with pytest.raises(pl.VolumeNotWritable, match="read-only"):
        run(models_dir)
    assert hub.served() == 0


@WORKERS
def test_marker_only_after_all_files(hub, models_dir, workers):
    hub.fault("sub/weights.pth", *[Fault("status", code=404)])
    with pytest.raises(HubError):
        run(models_dir, workers=workers)
    man = json.loads(mf.manifest_path(models_dir, "tiny").read_text())
    assert len(man["entries"]) == 2                  # the two files before it are kept
    assert not mf.marker_path(models_dir, "tiny").exists()
    run(models_dir)
    assert mf.is_marked_ready(models_dir, "tiny")


def test_unreachable_hub_says_so_and_writes_nothing(hub, models_dir, monkeypatch):
    monkeypatch.setattr("nodes.engine.hub.time.sleep", lambda s: None)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # discard port: refused
    with pytest.raises(HubError, match="cannot reach the Hub") as err:
        run(models_dir)
    assert "files already fetched are kept" in str(err.value)
    assert not (models_dir / "tiny").exists()


# --- parallel downloads (--workers) ---------------------------------------------------------

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
    _reset_when_idle(hub)
    res = cli(*_shard_args(models_dir, 3))
    assert res.returncode == 0, res.stderr
    for name, data in files.items():                    # each part resumed from its last byte
        assert hub.served(name) == len(data) - before[name], name
        assert (folder / name).read_bytes() == data
    assert _count_entries(models_dir) == len(files) and mf.is_marked_ready(models_dir, "shards")


def _count_entries(models_dir: Path) -> int:
    return len(mf.load_manifest(models_dir, "shards").entries)


def test_ctrl_c_stops_every_worker_and_keeps_their_parts(hub, models_dir):
    files = shard_files(3, 2_000_000)                   # 3 x 8 MB at 1 MB/s each: 8 s to finish
    hub.add_repo("acme/shards", files)
    hub.state.throttle_bps = 1_000_000
    folder = models_dir / "shards"
    proc = popen(*_shard_args(models_dir, 3))
    for name in files:
        _wait_for_part(part_path(folder / name), 1, proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert time.monotonic() - started < 3                # did not wait ~7 s for the files to finish
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
    bar = Progress(8 * 2000, 8, enabled=True, slots=3)

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
