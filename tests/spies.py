"""Counting calls from the tests, so product code carries no counters that only tests read."""
from __future__ import annotations

import functools


class Calls:
    """Wraps ``owner.name`` (through ``monkeypatch``) and counts the calls that go through it."""

    def __init__(self, monkeypatch, owner, name: str) -> None:
        self.count = 0
        real = getattr(owner, name)

        @functools.wraps(real)
        def spy(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)


class IndexUse:
    """Real scans vs answers from the cached volume index (``find._cached``)."""

    def __init__(self, monkeypatch) -> None:
        from wan_engine.store import find

        self.scans = self.reused = 0
        real = find._cached

        def spy(key, dirs, compute):
            computed = []

            def counting():
                computed.append(1)
                return compute()

            value = real(key, dirs, counting)
            if computed:
                self.scans += 1
            else:
                self.reused += 1
            return value

        monkeypatch.setattr(find, "_cached", spy)
