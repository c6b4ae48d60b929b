"""Template key maps: pairs of module paths with ``{n}`` for block numbers, usable both ways."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class KeyMap:
    """Renames module-path prefixes between two layouts ("theirs" -> "ours").

    ``pairs`` holds (theirs, ours) templates such as ``("blocks.{n}.self_attn.q",
    "blocks.{n}.attn1.to_q")``. A key is renamed by the first template matching a whole
    dotted prefix of it; the rest of the key (``.weight``, ``.lora_A.weight``...) is kept.
    """

    pairs: tuple[tuple[str, str], ...]
    _fwd: list = field(default_factory=list, init=False, repr=False)
    _rev: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._fwd = [(_compile(a), b) for a, b in self.pairs]
        self._rev = [(_compile(b), a) for a, b in self.pairs]

    def to_ours(self, key: str) -> str | None:
        """``key`` renamed to our layout, or None when no template matches."""
        return _apply(self._fwd, key)

    def to_theirs(self, key: str) -> str | None:
        return _apply(self._rev, key)


def _compile(template: str) -> re.Pattern:
    body = re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)")
    return re.compile(rf"^{body}(?=\.|$)")


def _apply(rules: list, key: str) -> str | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            n = m.groupdict().get("n")
            head = target.replace("{n}", n) if n is not None else target
            return head + key[m.end():]
    return None


def strip_prefix(key: str, prefixes: tuple[str, ...]) -> str:
    for p in prefixes:
        if key.startswith(p):
            return key[len(p):]
    return key
