"""Progress for preload and verify: per-file and total bars (bytes, rate, ETA) and a summary table."""
from __future__ import annotations

import sys
from typing import Iterable, Sequence

from tqdm import tqdm


class Progress:
    """A total bar and a bar for the current file, both on stderr."""

    def __init__(self, total_bytes: int, files: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.total = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=f"total ({files} files)", position=0, file=sys.stderr,
                          disable=not enabled, dynamic_ncols=True, mininterval=0.5)
        self.file: tqdm | None = None

    def start_file(self, name: str, size: int, already: int) -> None:
        self.end_file()
        self.file = tqdm(total=size, initial=already, unit="B", unit_scale=True,
                         unit_divisor=1024, desc=_short(name), position=1, leave=False,
                         file=sys.stderr, disable=not self.enabled, dynamic_ncols=True,
                         mininterval=0.5)

    def update(self, n: int) -> None:
        self.total.update(n)
        if self.file is not None:
            self.file.update(n)

    def end_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def close(self) -> None:
        self.end_file()
        self.total.close()


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
