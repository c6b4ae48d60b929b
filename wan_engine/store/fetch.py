"""Fetch one file to the volume: resumable, retried, hashed while writing, renamed when it matches.

The bytes go to ``<final>.part`` next to the final path. A restarted fetch continues the part
from its last byte with an HTTP Range request. The file appears under its final name only after
its size and SHA-256 (or git blob id, for small non-LFS files) match, by atomic rename.
Several files may be fetched at once from threads (preload.py); each call touches only its own
part file. ``stop`` lets the caller end every fetch at its next chunk (Ctrl-C), keeping the parts.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .hashing import Hasher, feed
from .hub import HubError, RemoteFile, auth_headers, http_module, offline_error
from .manifest import fsync_dir

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024   # network reads; disk reads for hashing use hashing.CHUNK
FSYNC_EVERY = 64 * 1024 * 1024


@dataclass
class RetryPolicy:
    attempts: int = 8             # tries in a row that gain no byte before giving up
    hash_attempts: int = 3        # full refetches after a hash mismatch
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    read_timeout_s: float = 60.0  # a stall longer than this drops the connection and retries

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** attempt)


@dataclass
class FetchResult:
    relpath: str
    size: int
    sha256: str
    action: str                   # "kept" | "fetched" | "resumed"
    bytes_fetched: int = 0
    seconds: float = 0.0
    retries: int = 0


class FetchFailed(HubError):
    """A file could not be fetched after every retry, or never matched its hash."""


class FetchCancelled(Exception):
    """The caller set ``stop`` (Ctrl-C, or another file failed unexpectedly); the part is kept."""


def part_path(final: Path) -> Path:
    """Where ``final`` is written until it is complete: ``<name>.part`` beside it. The one naming
    of partial files: downloads here, videos in video.py."""
    return final.with_name(final.name + ".part")


def fetch_file(rf: RemoteFile, final: Path, policy: RetryPolicy,
               on_bytes: Callable[[int], None] = lambda n: None,
               stop: threading.Event | None = None) -> FetchResult:
    """Fetch ``rf`` to ``final``; resume a part left by an earlier run.

    Raises FetchCancelled soon after ``stop`` is set (at the next chunk or during a back-off).
    """
    stop = stop or threading.Event()
    started = time.monotonic()
    part = part_path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    resumed = part.is_file() and part.stat().st_size > 0
    fetched = retries = 0
    for hash_try in range(policy.hash_attempts):
        hasher, have = _prime(part, rf.size)
        got, tries = _download(rf, part, have, hasher, policy, on_bytes, stop)
        fetched, retries = fetched + got, retries + tries
        if matches(rf, hasher):
            _commit(part, final)
            action = "resumed" if resumed else "fetched"
            return FetchResult(rf.relpath, rf.size, hasher.sha256.hexdigest(), action, fetched,
                               time.monotonic() - started, retries)
        log.warning("%s: hash does not match the Hub's (try %d/%d); fetching it again from zero",
                    rf.relpath, hash_try + 1, policy.hash_attempts)
        part.unlink(missing_ok=True)
        resumed = False
    raise FetchFailed(f"content never matched the Hub's SHA-256 after {policy.hash_attempts} "
                      "full downloads", field="file", value=rf.relpath,
                      fix="the network or a proxy is altering data; retry on another network")


def _prime(part: Path, size: int) -> tuple[Hasher, int]:
    """Hash what an earlier run left in the part file; drop it if it is longer than the file."""
    hasher = Hasher(size)
    if not part.is_file():
        return hasher, 0
    if part.stat().st_size > size:
        part.unlink()
        return hasher, 0
    return hasher, feed(hasher, part)


def matches(rf: RemoteFile, hasher: Hasher) -> bool:
    """The file hashed by ``hasher`` is the one the Hub published (SHA-256, else git blob id)."""
    if rf.sha256:
        return hasher.sha256.hexdigest() == rf.sha256
    if rf.git_oid:
        return hasher.git.hexdigest() == rf.git_oid
    return True  # neither hash known: size was checked; the manifest records our SHA-256


def _commit(part: Path, final: Path) -> None:
    os.replace(part, final)
    fsync_dir(final.parent)


def _download(rf: RemoteFile, part: Path, have: int, hasher: Hasher, policy: RetryPolicy,
              on_bytes: Callable[[int], None], stop: threading.Event) -> tuple[int, int]:
    """Bring the part file to ``rf.size`` bytes; returns (bytes fetched, retries)."""
    fetched = retries = idle = 0
    while have < rf.size:
        try:
            got = _stream(rf, part, have, hasher, policy, on_bytes, stop)
        except _Restart:
            hasher.reset()  # the server ignored Range: the part was dropped
            have, got = 0, 0
            continue
        except _Transient as exc:
            got, reason = exc.got, exc.reason
            fetched, have = fetched + got, have + got
            idle = 0 if got else idle + 1
            if idle >= policy.attempts:
                raise FetchFailed(f"gave up after {policy.attempts} tries in a row without "
                                  f"progress (last: {reason})", field="file", value=rf.relpath,
                                  fix="run the same command again later; it resumes from byte "
                                      f"{have}") from None
            retries += 1
            wait = policy.delay(idle)
            log.warning("%s: %s at byte %d; retry in %.1fs", rf.relpath, reason, have, wait)
            if stop.wait(wait):
                raise FetchCancelled(rf.relpath)
            continue
        fetched, have = fetched + got, have + got
    return fetched, retries


class _Transient(Exception):
    def __init__(self, reason: str, got: int) -> None:
        super().__init__(reason)
        self.reason, self.got = reason, got


class _Restart(Exception):
    pass


def _stream(rf: RemoteFile, part: Path, have: int, hasher: Hasher, policy: RetryPolicy,
            on_bytes: Callable[[int], None], stop: threading.Event) -> int:
    """One GET from byte ``have``; appends to the part. Raises _Transient on retryable faults."""
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    headers = {**auth_headers(), "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    httpx = http_module()   # the client library of the installed huggingface_hub (1.x or 2.x)
    timeout = httpx.Timeout(30.0, read=policy.read_timeout_s)
    got = 0
    try:
        with get_session().stream("GET", rf.url, headers=headers, timeout=timeout,
                                  follow_redirects=True) as resp:
            _check_status(rf, resp, have, part)
            with open(part, "ab" if have else "wb") as fh:
                since_sync = 0
                for chunk in resp.iter_bytes(CHUNK):
                    if stop.is_set():
                        raise FetchCancelled(rf.relpath)
                    chunk = chunk[: rf.size - have - got]
                    fh.write(chunk)
                    hasher.update(chunk)
                    got += len(chunk)
                    since_sync += len(chunk)
                    on_bytes(len(chunk))
                    if since_sync >= FSYNC_EVERY:
                        fh.flush()
                        os.fsync(fh.fileno())
                        since_sync = 0
                fh.flush()
                os.fsync(fh.fileno())
    except OfflineModeIsEnabled:
        raise offline_error(f"{rf.repo}/{rf.repo_path}") from None
    except httpx.TransportError as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                         got) from None
    if have + got < rf.size:
        raise _Transient(f"body ended early ({have + got} of {rf.size} bytes)", got)
    return got


def _check_status(rf: RemoteFile, resp: object, have: int, part: Path) -> None:
    status = resp.status_code  # type: ignore[attr-defined]
    if status == 206 and have:
        start = resp.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]  # type: ignore[attr-defined]
        if start != str(have):
            raise _Transient(f"server answered range from {start!r}, asked {have}", 0)
        return
    if status == 200:
        if have:
            log.warning("%s: server ignored Range; restarting the file", rf.relpath)
            part.unlink(missing_ok=True)
            raise _Restart()
        return
    if status in (401, 403, 404):
        raise HubError(f"the Hub answered {status} for the file", field="file",
                       value=f"{rf.repo}/{rf.repo_path}",
                       fix="set HF_TOKEN to a token of an account that has accepted the licence "
                           f"at https://huggingface.co/{rf.repo}" if status != 404 else
                           "the file is gone from that commit; run the preload again")
    raise _Transient(f"HTTP {status}", 0)
