"""preload: manifest pinned to the commit, resume after SIGKILL, faults, one writer, clear failures
(with 1 and several workers; the parallel-only tests are in test_preload_parallel.py)."""
from __future__ import annotations

import json
import signal

import pytest

from fake_hub import Fault, tiny_safetensors
from volume_fixtures import (FAST, cli, hub, models_dir, popen, reset_when_idle, run,  # noqa: F401
                             sha, tiny_repo_files, wait_for_part)

from wan_engine.store import manifest as mf
from wan_engine.store import preload as pl
from wan_engine.store import profiles
from wan_engine.store.fetch import FetchFailed
from wan_engine.store.hub import HubError

TINY = profiles.repo_source("acme/tiny")
WORKERS = pytest.mark.parametrize("workers", [1, 3], ids=["workers1", "workers3"])


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


@WORKERS
def test_sigkill_mid_file_then_rerun_fetches_only_what_was_missing(hub, models_dir, workers):
    files = tiny_repo_files()
    size = len(files["model.safetensors"])
    hub.state.throttle_bps = 2_000_000
    args = ("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST,
            "--workers", str(workers))
    proc = popen(*args)
    part = models_dir / "tiny" / "model.safetensors.part"
    wait_for_part(part, size // 4, proc)
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
    reset_when_idle(hub)
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
    monkeypatch.setattr("wan_engine.store.hub.time.sleep", lambda s: None)
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
    wait_for_part(models_dir / "tiny" / "model.safetensors.part", 1, first)
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
    monkeypatch.setattr("wan_engine.store.hub.time.sleep", lambda s: None)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # discard port: refused
    with pytest.raises(HubError, match="cannot reach the Hub") as err:
        run(models_dir)
    assert "files already fetched are kept" in str(err.value)
    assert not (models_dir / "tiny").exists()


# --- parallel downloads (--workers) ---------------------------------------------------------
