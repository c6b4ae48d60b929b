"""A read-only passthrough FUSE filesystem that throttles like a network volume (tests, benches).

Network volumes limit each stream (one open file's request sequence) as well as the whole
volume, and answer each request after a delay; the blkio throttle of bench/bench_coldstart.py
can only limit the volume. ``ThrottleFS(source, mount, stream_mbps=8, volume_mbps=64,
latency_ms=2)`` mounts ``source`` read-only at ``mount`` in its own process, with:

- a per-stream limit: each open file handle gets at most ``stream_mbps``;
- a per-volume limit: all handles together get at most ``volume_mbps``;
- a per-request latency: every read request is answered ``latency_ms`` after it could be;
- counters (``counters()``): bytes served, read requests and opens, kept in a small file the
  server process writes and this process reads (no pipe to drain).

Files are opened with FUSE's ``direct_io``: every read goes to the server (no page cache, so each
run is cold and the byte counter sees exactly what the reader asked for, nothing read ahead), and a
read() syscall becomes a sequence of requests of at most 1 MiB (the kernel's size), one at a
time, like a network client's stream. Shared mmap of a file is refused (ENODEV) in this mode.
``cache=True`` keeps the kernel's page cache instead (shared by every open until unmount, with its
readahead), as a network filesystem's client does: a prefetch then warms later reads.
0 means unlimited. Runs as a script too: ``python tests/throttlefs.py SOURCE MOUNT --stream-mbps 8``.
"""
from __future__ import annotations

import argparse
import errno
import mmap
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MB = 10**6
COUNTERS = struct.Struct("<3q")       # bytes served, read requests, opens
SLACK_S = 0.05


def fuse_missing() -> str | None:
    """Why a FUSE mount cannot work here, or None when it can (tests skip with this reason)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE is not available in this container)"
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        return "no fusermount3: apt-get install -y fuse3 libfuse3-3"
    if os.geteuid() != 0 and not os.stat(fusermount).st_mode & stat.S_ISUID:
        return f"not root, and {fusermount} is not setuid root: this user cannot mount"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "no mfusepy: pip install -r requirements-dev.txt"
    except OSError as exc:              # mfusepy raises this when libfuse is missing
        return f"libfuse is missing ({exc}): apt-get install -y libfuse3-3"
    return None


@dataclass(frozen=True)
class Counters:
    bytes_served: int
    requests: int
    opens: int


class Bucket:
    """A bandwidth limit shared by the requests that pass through it: each request of n bytes
    takes the next n / rate seconds of the link, after those already booked. The next request of
    the stream whose request was answered last, coming within ``SLACK_S`` of that answer, is booked
    from the answer: the round trip between a stream's answer and its next request (the kernel,
    this process) would otherwise cost a lone stream ~10 % of its limit, and a volume limit would
    seem to reward a second stream. The latency is still paid (a lone stream waits for each
    answer); another stream, or a link idle for longer, gets no credit (no burst)."""

    def __init__(self, mbps: float, latency_s: float = 0.0) -> None:
        self.rate, self.latency = mbps * MB, latency_s
        self.free_at = 0.0
        self.last = -1
        self.lock = threading.Lock()

    def book(self, nbytes: int, now: float, stream: int = 0) -> float:
        """When a transfer of ``nbytes`` asked for at ``now`` by ``stream`` is done (``now`` if unlimited)."""
        if self.rate <= 0:
            return now
        with self.lock:
            answered = self.free_at + self.latency
            if self.free_at > now:                                      # busy: after what is booked
                start = self.free_at
            elif stream == self.last and now - SLACK_S <= answered:     # the same stream's next request
                start = min(now, answered)
            else:
                start = now
            self.free_at, self.last = start + nbytes / self.rate, stream
            return self.free_at


def _operations(source: Path, stream_mbps: float, volume_mbps: float, latency_ms: float, counters: mmap.mmap,
                cache: bool):
    import mfusepy

    class Passthrough(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self.volume = Bucket(volume_mbps, latency_ms / 1000)
            self.streams: dict[int, tuple[int, Bucket]] = {}    # handle -> (fd, its bucket)
            self.next_handle = 1
            self.mutex = threading.Lock()   # not "lock": that name is the FUSE file-lock operation
            self.totals = list(COUNTERS.unpack_from(counters, 0))     # a remount goes on counting

        def _real(self, path: str) -> str:
            return os.path.join(source, path.lstrip("/"))

        def _count(self, nbytes: int, requests: int, opens: int) -> None:
            with self.mutex:
                self.totals = [self.totals[0] + nbytes, self.totals[1] + requests, self.totals[2] + opens]
                COUNTERS.pack_into(counters, 0, *self.totals)

        def getattr(self, path, fh=None):
            try:
                st = os.lstat(self._real(path))
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno) from None
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns",
                    "st_ctime_ns", "st_blocks")
            attrs = {k.replace("_ns", ""): getattr(st, k) for k in keys}
            attrs["st_mode"] &= ~0o222            # read-only
            return attrs

        def readdir(self, path, fh):
            return [".", ".."] + sorted(os.listdir(self._real(path)))

        def readlink(self, path):
            return os.readlink(self._real(path))

        def open(self, path, fi):
            if fi.flags & (os.O_WRONLY | os.O_RDWR):
                raise mfusepy.FuseOSError(errno.EROFS)
            fd = os.open(self._real(path), os.O_RDONLY)
            with self.mutex:
                handle, self.next_handle = self.next_handle, self.next_handle + 1
                self.streams[handle] = (fd, Bucket(stream_mbps, latency_ms / 1000))
            fi.fh = handle
            if cache:
                fi.keep_cache = 1          # the page cache lasts until unmount, shared by every open
            else:
                fi.direct_io = 1
            self._count(0, 0, 1)
            return 0

        def read(self, path, size, offset, fh):
            fd, stream = self.streams[fh.fh]
            asked = time.monotonic()
            data = os.pread(fd, size, offset)
            booked = (stream.book(len(data), asked, fh.fh), self.volume.book(len(data), asked, fh.fh))
            done = max(booked) + latency_ms / 1000
            time.sleep(max(0.0, done - time.monotonic()))
            self._count(len(data), 1, 0)
            return data

        def release(self, path, fh):
            with self.mutex:
                fd, _ = self.streams.pop(fh.fh)
            os.close(fd)
            return 0

        def statfs(self, path):
            st = os.statvfs(self._real(path))
            return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                  "f_files", "f_ffree", "f_favail", "f_namemax")}

    return Passthrough()


def serve(source: Path, mount: Path, stream_mbps: float, volume_mbps: float, latency_ms: float,
          counters_path: Path, cache: bool = False) -> None:
    """Mount and serve until unmounted (blocks; ThrottleFS runs this in its own process)."""
    import mfusepy

    with open(counters_path, "r+b") as fh:
        counters = mmap.mmap(fh.fileno(), COUNTERS.size)
    ops = _operations(source.resolve(), stream_mbps, volume_mbps, latency_ms, counters, cache)
    mfusepy.FUSE(ops, str(mount), raw_fi=True, foreground=True, ro=True,
                 fsname=f"throttlefs:{source}")


class ThrottleFS:
    """``source`` mounted read-only and throttled at ``mount`` while the block runs.

    The server is its own process (``python tests/throttlefs.py``); leaving the block unmounts it
    (``fusermount3 -u``) and waits for that process, ending it by its pid if it does not exit."""

    def __init__(self, source: Path, mount: Path, stream_mbps: float = 0, volume_mbps: float = 0,
                 latency_ms: float = 0, cache: bool = False) -> None:
        for name, value in (("stream_mbps", stream_mbps), ("volume_mbps", volume_mbps),
                            ("latency_ms", latency_ms)):
            if not value >= 0:
                raise ValueError(f"ThrottleFS {name} = {value!r}: must be 0 (unlimited) or more")
        self.source, self.mount = Path(source), Path(mount)
        self.limits = (stream_mbps, volume_mbps, latency_ms)
        self.cache = cache
        self.proc: subprocess.Popen | None = None
        fd, name = tempfile.mkstemp(prefix="throttlefs-", suffix=".counters")
        os.write(fd, bytes(COUNTERS.size))
        os.close(fd)
        self.counters_path = Path(name)
        self.log_path = self.counters_path.with_suffix(".log")     # the server's output (a pipe could fill)

    def __enter__(self) -> "ThrottleFS":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.counters_path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)

    def start(self, timeout: float = 30.0) -> None:
        reason = fuse_missing()
        if reason:
            raise RuntimeError(f"cannot mount {self.mount}: {reason}")
        self.mount.mkdir(parents=True, exist_ok=True)
        stream, volume, latency = self.limits
        cmd = [sys.executable, __file__, str(self.source), str(self.mount), "--stream-mbps", str(stream),
               "--volume-mbps", str(volume), "--latency-ms", str(latency), "--counters", str(self.counters_path)]
        cmd += ["--cache"] if self.cache else []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                out = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"throttlefs did not mount {self.source} at {self.mount} "
                                   f"within {timeout:.0f} s: {out[-2000:] or 'no output'}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", str(self.mount)], check=False, capture_output=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["fusermount3", "-uz", str(self.mount)], check=False, capture_output=True)
        self.proc = None

    def remount(self) -> None:
        """Unmount and mount again (a new device id; the counters go on)."""
        self.stop()
        self.start()

    def counters(self) -> Counters:
        return Counters(*COUNTERS.unpack(self.counters_path.read_bytes()[:COUNTERS.size]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("mount", type=Path)
    ap.add_argument("--stream-mbps", type=float, default=0.0, help="per open file, MB/s (0: unlimited)")
    ap.add_argument("--volume-mbps", type=float, default=0.0, help="all files together, MB/s (0: unlimited)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every read request")
    ap.add_argument("--counters", type=Path, required=True, help="a file of 24 zero bytes for the counters")
    ap.add_argument("--cache", action="store_true", help="keep the page cache (until unmount) instead of direct_io")
    args = ap.parse_args()
    serve(args.source, args.mount, args.stream_mbps, args.volume_mbps, args.latency_ms, args.counters, args.cache)


if __name__ == "__main__":
    main()
