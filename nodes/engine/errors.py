"""One vocabulary of errors: what was expected, what was found, and the next step."""
from __future__ import annotations


class WanVolumeError(Exception):
    """An error a user can act on.

    ``field`` names the input or setting, ``value`` what was given, ``fix`` the next step.
    The message reads: "<field> = <value>: <problem>. Fix: <fix>".
    """

    def __init__(self, problem: str, *, field: str | None = None, value: object = None,
                 fix: str | None = None) -> None:
        self.problem = problem
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(self._compose())

    def _compose(self) -> str:
        head = f"{self.field} = {self.value!r}: " if self.field else ""
        tail = f" Fix: {self.fix}" if self.fix else ""
        return f"{head}{self.problem}.{tail}".replace("..", ".")


class ModelSetNotFound(WanVolumeError):
    """No usable model set, or the named one is not on the volume."""


class InvalidInput(WanVolumeError):
    """A node input breaks a rule; raised before any model work."""


class LoraMismatch(WanVolumeError):
    """A LoRA file whose keys match nothing in the model."""
