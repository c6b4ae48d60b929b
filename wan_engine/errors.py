"""One vocabulary of errors: what was expected, what was found, and the next step."""
from __future__ import annotations

VALUE_SHOWN = 1024   # characters of a value shown in a message: whole paths, a 131,072-character prompt cut


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
        stop = "" if self.problem.endswith((".", "!", "?")) else "."
        tail = f" Fix: {self.fix}" if self.fix else ""
        return f"{head}{self.problem}{stop}{tail}"


def show_value(value: object) -> str:
    """``repr(value)``, shortened for huge values (the length is said, the start is kept)."""
    text = repr(value)
    if len(text) <= VALUE_SHOWN:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[:VALUE_SHOWN]}... ({size})"


class ModelSetNotFound(WanVolumeError):
    """No usable model set, or the named one is not on the volume."""


class InvalidInput(WanVolumeError):
    """A node input breaks a rule; raised before any model work."""


class LoraMismatch(WanVolumeError):
    """A LoRA file whose keys match nothing in the model."""
