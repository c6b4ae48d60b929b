"""A slow network volume for test servers (on PYTHONPATH only where a test asks for it).

While the file WANVOLUME_TEST_SLOW_GATE exists, unbuffered binary reads of files below
WANVOLUME_TEST_SLOW_DIR (how wan_engine/load/fastload.py reads weights) return at most 64 KiB per
call, each after 0.1 s: a load crawls at ~0.6 MB/s, so its progress can be watched; removing the
gate lets it finish at full speed. The product code has no such knob."""
from __future__ import annotations

import builtins
import io
import os
import time

_DIR = os.environ.get("WANVOLUME_TEST_SLOW_DIR")
_GATE = os.environ.get("WANVOLUME_TEST_SLOW_GATE")
_STEP, _PAUSE = 64 * 1024, 0.1


class _SlowFile(io.FileIO):
    def readinto(self, buffer):
        if _GATE and os.path.exists(_GATE):
            time.sleep(_PAUSE)
            return super().readinto(memoryview(buffer).cast("B")[:_STEP])
        return super().readinto(buffer)


def _slow_open(file, mode="r", buffering=-1, *args, **kwargs):
    if (buffering == 0 and mode in ("rb", "br") and isinstance(file, (str, os.PathLike))
            and os.path.realpath(os.fspath(file)).startswith(_DIR + os.sep)):
        return _SlowFile(file, "r")
    return _real_open(file, mode, buffering, *args, **kwargs)


if _DIR and _GATE:
    _DIR = os.path.realpath(_DIR)
    _real_open = builtins.open
    builtins.open = _slow_open
