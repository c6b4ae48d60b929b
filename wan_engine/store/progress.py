"""Progress for preload and verify: per-file and total bars (bytes, rate, ETA) and a summary table."""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

from tqdm import tqdm


class TransferBars:
    """A total bar (bytes, rate, ETA across all workers) and one bar per file in flight, on stderr.

    Thread-safe: download threads call ``start_file`` and their FileBar's ``update``/``close``;
    one lock serialises every bar change, and each file in flight holds its own screen line.
    """

    def __init__(self, total_bytes: int, files: int, enabled: bool = True, slots: int = 1,
                 already: int = 0) -> None:
        self.enabled = enabled
        self.files, self.done = files, 0
        self._lock = threading.Lock()
        self._lines = max(1, slots)
        self._free = list(range(1, self._lines + 1))   # screen lines under the total bar
        self.total = tqdm(total=total_bytes, initial=already, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=self._desc(), position=0, file=sys.stderr,
                          disable=not enabled, dynamic_ncols=True, mininterval=0.5)

    def _desc(self) -> str:
        return f"total ({self.done}/{self.files} files)"

    def start_file(self, name: str, size: int, already: int) -> "FileBar":
        with self._lock:
            if not self._free:               # more files in flight than slots: add a line
                self._lines += 1
                self._free.append(self._lines)
            line = self._free.pop(0)
            bar = tqdm(total=size, initial=already, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=_short(name), position=line, leave=False, file=sys.stderr,
                       disable=not self.enabled, dynamic_ncols=True, mininterval=0.5)
        return FileBar(self, bar, line)

    def _update(self, bar: tqdm, n: int) -> None:
        with self._lock:
            self.total.update(n)
            bar.update(n)

    def _end(self, bar: tqdm, line: int, finished: bool) -> None:
        with self._lock:
            bar.close()
            self._free = sorted(self._free + [line])
            if finished:
                self.done += 1
                self.total.set_description(self._desc(), refresh=False)

    def close(self) -> None:
        with self._lock:
            self.total.close()


@dataclass
class FileBar:
    """The bar of one file in flight; pass ``update`` to fetch_file as its byte callback."""

    progress: TransferBars
    bar: tqdm
    line: int

    def update(self, n: int) -> None:
        self.progress._update(self.bar, n)

    def close(self, finished: bool = True) -> None:
        self.progress._end(self.bar, self.line, finished)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
