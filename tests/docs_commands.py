"""The shell commands README.md and docs/*.md show, and the output they quote for them.

A command is a line of a fenced block, or an inline code span, that starts with a program a user
types (``python wanvolume.py``, ``bash scripts/...``, ``hf download``, ...), after optional
``VAR=value`` assignments and a ``$ `` prompt. A fenced block without a language right after a
paragraph that ends with an inline command and a colon is that command's quoted output.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_ENV = r"(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
_PROGRAM = (r"(?:\.venv[\w.-]*/bin/)?python3?\s|wanvolume\.py\s|bash\s|sh\s|hf\s|huggingface-cli\s|"
            r"docker\s|curl\s|pip3?\s|git\s|cd\s")
COMMAND = re.compile(rf"^(?:\$\s+)?{_ENV}(?:{_PROGRAM})")
# in a fenced block a bare `wanvolume.py ...` is a file listing, not a command
BLOCK_COMMAND = re.compile(rf"^(?:\$\s+)?{_ENV}(?!wanvolume\.py)(?:{_PROGRAM})")
_FENCE = re.compile(r"^\s*```(\S*)\s*$")
_SPAN = re.compile(r"`([^`]+)`")
# usage placeholders: a synopsis (`verify [--workers N]`), not a command to run as it stands
PLACEHOLDER = re.compile(r"[\[\]|…]|\.\.\.|^(?:[A-Z]+|WxHxF|ORG/NAME)$")


@dataclass(frozen=True)
class Shown:
    """One command as a document shows it."""
    doc: str                      # path relative to the repo
    line: int
    text: str                     # as written, prompt and trailing comment removed
    output: tuple[str, ...] = field(default=(), compare=False)   # quoted output block, if any

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def env_and_argv(self) -> tuple[dict[str, str], list[str]]:
        """``VAR=value`` prefixes and the words of the command (shell quoting honoured)."""
        words = shlex.split(self.text.replace("\\|", "|"))
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        return env, words

    def wanvolume_args(self) -> list[str] | None:
        """The arguments after ``wanvolume.py``, or None for another program."""
        _, words = self.env_and_argv()
        for i, word in enumerate(words[:2]):
            if word.endswith("wanvolume.py"):
                return words[i + 1:]
        return None

    def is_synopsis(self) -> bool:
        _, words = self.env_and_argv()
        return any(PLACEHOLDER.search(w) for w in words)


def _clean(line: str) -> str:
    line = re.sub(r"^\$\s+", "", line.strip())
    return re.sub(r"\s+#\s.*$", "", line).strip()


def _inline(doc: str, lines: list[str], start: int, para: list[tuple[int, str]]) -> list[Shown]:
    """The inline commands of one paragraph; the last one gets the fenced block that follows
    when the paragraph ends with it and a colon."""
    found = []
    if para:                         # a code span may wrap onto the next line of its paragraph
        joined = "\n".join(text for _, text in para)
        for m in _SPAN.finditer(joined):
            span = " ".join(m.group(1).split())
            if COMMAND.match(span):
                found.append(Shown(doc, para[0][0] + joined.count("\n", 0, m.start()), _clean(span)))
    while start < len(lines) and not lines[start].strip():
        start += 1
    if found and re.search(r"`:\s*$", para[-1][1]) and start < len(lines) \
            and lines[start].strip() == "```":
        block = []
        for text in lines[start + 1:]:
            if text.strip().startswith("```"):
                break
            block.append(text.rstrip())
        last = found[-1]
        found[-1] = Shown(last.doc, last.line, last.text, tuple(block))
    return found


def commands(path: Path) -> list[Shown]:
    """Every command ``path`` shows, in order."""
    doc = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    out: list[Shown] = []
    para: list[tuple[int, str]] = []
    in_block = False
    cont: tuple[int, str] | None = None      # a block line ending in `\` continues on the next
    for i, text in enumerate(lines):
        if in_block and cont is not None:
            text = cont[1] + " " + text.strip()
            i, cont = cont[0], None
        if in_block and text.rstrip().endswith("\\") and not _FENCE.match(text):
            cont = (i, text.rstrip()[:-1].rstrip())
            continue
        fence = _FENCE.match(text)
        if fence:
            if not in_block:
                out += _inline(doc, lines, i, para)
                para = []
            in_block = not in_block
        elif in_block:
            if BLOCK_COMMAND.match(text.strip()):
                out.append(Shown(doc, i + 1, _clean(text)))
        elif text.strip():
            para.append((i + 1, text))
        else:
            out += _inline(doc, lines, i, para)
            para = []
    return out + _inline(doc, lines, len(lines), para)


def all_commands() -> list[Shown]:
    return [c for path in DOCS for c in commands(path)]


def run_in_one_process(argvs: list[list[str]]) -> list[dict]:
    """``wanvolume.main(argv)`` for each argv in this process: stdout, exit code, and the error
    if one escaped. For the plan commands, whose first run imports torch and diffusers (about 20 s)
    and whose later runs take a second: one process for all keeps the test fast."""
    import contextlib
    import io
    import traceback

    import wanvolume

    results = []
    for argv in argvs:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = wanvolume.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:          # noqa: BLE001 - reported as the command's failure
                code = None
                err.write(traceback.format_exc())
        results.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    return results


if __name__ == "__main__":      # python tests/docs_commands.py '<json list of argv lists>'
    import json
    import sys

    sys.path.insert(0, str(REPO))
    print(json.dumps(run_in_one_process(json.loads(sys.argv[1]))))
