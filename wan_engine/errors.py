"""One vocabulary of errors: what was expected, what was found, and the next step."""
from __future__ import annotations

VALUE_SHOWN = 1024   # characters of a value shown in a message: whole paths, a 131,072-character prompt cut
TEXT_SHOWN = 4096    # characters of a problem or fix: one that quotes a huge value stays bounded


class WanVolumeError(Exception):
    """An error a user can act on.

    ``field`` names the input or setting, ``value`` what was given, ``fix`` the next step;
    ``suggested`` holds the values the fix proposes (each passes the rule: tests check that).
    The message reads: "<field> = <value>: <problem>. Fix: <fix>". Nothing in ``problem`` or
    ``fix`` is rewritten: paths and "1, 5, 9, ... 81" appear exactly as given.
    """

    def __init__(self, problem: str, *, field: str | None = None, value: object = None,
                 fix: str | None = None, suggested: tuple = ()) -> None:
        self.problem = problem
        self.suggested = tuple(suggested)
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(self._compose())

    def _compose(self) -> str:
        head = f"{self.field} = {show_value(self.value)}: " if self.field else ""
        problem = _bounded(self.problem)
        stop = "" if problem.endswith((".", "!", "?")) else "."
        tail = f" Fix: {_bounded(self.fix)}" if self.fix else ""
        return f"{head}{problem}{stop}{tail}"


def show_value(value: object) -> str:
    """``repr(value)``, shortened for huge values (the length is said, the start is kept)."""
    text = repr(value)
    if len(text) <= VALUE_SHOWN:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[:VALUE_SHOWN]}... ({size})"


def _bounded(text: str) -> str:
    """``text`` whole up to TEXT_SHOWN characters; longer (it quotes a huge value), cut and said so.
    A 10 MB LoRA name made a 21 MB answer to /prompt and 10 MB of log per request."""
    if len(text) <= TEXT_SHOWN:
        return text
    return f"{text[:TEXT_SHOWN]}... ({len(text)} characters, cut)"


class ModelSetNotFound(WanVolumeError):
    """No usable model set, or the named one is not on the volume."""


class InvalidInput(WanVolumeError):
    """A node input breaks a rule; raised before any model work."""


class LoraMismatch(WanVolumeError):
    """A LoRA file whose keys match nothing in the model."""
