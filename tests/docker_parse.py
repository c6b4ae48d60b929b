"""A small reader of the Dockerfile instructions the pack uses, and of BuildKit's .dockerignore.

Enough for tests/test_docker.py to check the images as far as a machine without a Docker daemon
can: FROM/ARG/ENV/COPY/RUN/CMD/EXPOSE/WORKDIR lines (continuations joined, comments dropped,
exec-form JSON and shell form), and .dockerignore patterns (Go filepath.Match syntax plus `**`,
`!` exceptions, last match wins), the rules `docker build` applies to the build context."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    name: str        # upper case: COPY, RUN, ...
    args: str        # the rest of the line, continuations joined
    line: int        # 1-based line of the instruction's first line

    def words(self) -> list[str]:
        """Exec form (a JSON list) or shell-split words, with --flags dropped (COPY --chown=...)."""
        text = self.args.strip()
        if text.startswith("["):
            return [str(w) for w in json.loads(text)]
        return [w for w in shlex.split(text) if not w.startswith("--")]

    def env_pairs(self) -> dict[str, str]:
        """ENV NAME=value NAME2="v" (the key=value form), or ENV NAME value (the legacy form)."""
        words = shlex.split(self.args)
        if words and "=" not in words[0]:
            return {words[0]: " ".join(words[1:])}
        return dict(w.split("=", 1) for w in words)


def parse(path: Path) -> list[Instruction]:
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue                                  # comment lines inside a continuation
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        name, _, args = text.partition(" ")
        out.append(Instruction(name.upper(), args.strip(), start))
    return out


def copies(instructions: list[Instruction]) -> list[tuple[list[str], str, int]]:
    """(sources, destination, line) of each COPY/ADD."""
    found = []
    for ins in instructions:
        if ins.name in ("COPY", "ADD"):
            words = ins.words()
            found.append((words[:-1], words[-1], ins.line))
    return found


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex over a /-separated path relative to the context."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            parts.append(".*")
            i += 2
            if pattern.startswith("/", i):
                parts[-1] = "(?:.*/)?"
                i += 1
            continue
        c = pattern[i]
        parts.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    # A pattern that names a folder excludes everything inside it too.
    return re.compile("^" + "".join(parts) + "(?:/.*)?$")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, re.Pattern, str], ...]   # (is_exception, regex, pattern text)

    @classmethod
    def read(cls, path: Path) -> "DockerIgnore":
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = pattern.strip("/").removeprefix("./")
            rules.append((negate, _pattern_regex(pattern), line))
        return cls(tuple(rules))

    def excluded_by(self, rel: str) -> str | None:
        """The pattern that leaves ``rel`` out of the build context, or None if it is sent."""
        hit = None
        for negate, regex, text in self.rules:
            if regex.match(rel):
                hit = None if negate else text
        return hit
