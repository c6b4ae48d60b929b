"""How one load is done: dtype, switches and the byte-progress callback, passed to every builder.

A frozen value instead of module globals, so two loads can never see each other's options.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class LoadSpec:
    dtype: Any                                   # torch.dtype of the DiT and text encoder
    fp8_storage: bool = False                    # keep DiT Linear weights in fp8 in memory
    trust_pth: bool = False                      # open .pth files without a hash match
    on_bytes: Callable[[int, str], None] | None = None   # (bytes read, component) after each part
    on_grow: Callable[[int], None] | None = None         # extra bytes to read (a .pth hashed once)

    def loaded(self, files: Iterable[Path], what: str) -> None:
        """Report that ``files`` were read (drives the loader's byte progress bar)."""
        if self.on_bytes is not None:
            self.on_bytes(sum(Path(p).stat().st_size for p in files if Path(p).is_file()), what)

    def grow(self, nbytes: int) -> None:
        if self.on_grow is not None:
            self.on_grow(nbytes)

    def read(self, nbytes: int, what: str) -> None:
        if self.on_bytes is not None:
            self.on_bytes(nbytes, what)
