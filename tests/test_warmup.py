"""Background prefetch at start: which set, which files, and that it reads them."""
from __future__ import annotations

import logging

from wan_engine.load import fastload, warmup
from wan_engine import tiny_model


def test_off_by_default(volume_env, monkeypatch):
    monkeypatch.delenv(warmup.ENV_PREFETCH, raising=False)
    assert warmup.start() is None


def test_default_prefetches_every_file_of_the_set(volume_env, monkeypatch, caplog):
    monkeypatch.setenv(warmup.ENV_PREFETCH, "default")
    read = []
    real = fastload.read_plain
    monkeypatch.setattr(fastload, "read_plain", lambda paths, chunk: (read.extend(paths), real(paths, chunk))[1])
    with caplog.at_level(logging.INFO):
        thread = warmup.start()
        thread.join(60)
    expected = {p for p in (volume_env / tiny_model.TINY_SET_NAME).rglob("*")
                if p.is_file() and p.name != "README.txt" and p.name != "model_index.json"}
    assert set(read) == expected
    assert read[0].stat().st_size == max(p.stat().st_size for p in expected)   # largest first
    assert "prefetched" in caplog.text


def test_unknown_set_warns_and_does_nothing(volume_env, monkeypatch, caplog):
    monkeypatch.setenv(warmup.ENV_PREFETCH, "Wan2.1-I2V-14B-720P-Diffusers")
    assert warmup.start() is None
    assert "nothing prefetched" in caplog.text
