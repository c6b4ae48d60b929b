"""Shared fixtures for the volume tests: a fake Hub with tiny repos and a models dir."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from fake_hub import FakeHub, tiny_safetensors

ROOT = Path(__file__).resolve().parents[1]
BIG = 1_000_000   # floats: a 4 MB safetensors file


def tiny_pth(n: int = 5000) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("archive/data.pkl", date_time=(2025, 1, 1, 0, 0, 0))  # reproducible
        zf.writestr(info, b"\x80\x02" + b"x" * n)
    return buf.getvalue()


def tiny_repo_files() -> dict[str, bytes]:
    return {"config.json": b'{"model_type": "tiny"}',
            "model.safetensors": tiny_safetensors(BIG),
            "sub/weights.pth": tiny_pth()}


def shard_files(n: int, n_floats: int) -> dict[str, bytes]:
    """``n`` LFS shards with distinct content, like a sharded DiT; for parallel-download tests."""
    return {f"shard-{i}.safetensors": tiny_safetensors(n_floats, seed=i + 1) for i in range(n)}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with FakeHub() as h:
        h.add_repo("acme/tiny", tiny_repo_files())
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("WAN_VOLUME_FREE_BYTES", raising=False)
        yield h


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(d))
    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    return d


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run wanvolume.py in a fresh process with the test environment."""
    return subprocess.run([sys.executable, str(ROOT / "wanvolume.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "wanvolume.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def fast_policy():
    from wan_engine.store.fetch import RetryPolicy
    return RetryPolicy(backoff_s=0.01, backoff_max_s=0.05, read_timeout_s=1.0)


FAST = ["--read-timeout", "1", "--retry-backoff", "0.01", "-q"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_source():
    from wan_engine.store import profiles
    return profiles.repo_source("acme/tiny")


def run(models_dir: Path, sources=None, name: str = "tiny", workers: int = 1):
    """An in-process preload of the tiny repo (or ``sources``) with fast retries."""
    from wan_engine.store import preload as pl
    return pl.preload(name, sources or (tiny_source(),), models_dir, policy=fast_policy(),
                      show_progress=False, workers=workers)


def wait_for_part(path: Path, at_least: int, proc, timeout: float = 30) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and path.stat().st_size >= at_least:
            return path.stat().st_size
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {at_least} bytes")


def reset_when_idle(hub, timeout: float = 10) -> None:
    """Reset the byte counts once the fake Hub stopped writing to killed clients' sockets."""
    end = time.monotonic() + timeout
    while hub.state.in_flight and time.monotonic() < end:
        time.sleep(0.01)
    assert hub.state.in_flight == 0
    hub.reset_counts()
