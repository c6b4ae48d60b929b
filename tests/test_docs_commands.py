"""The commands README.md and docs/*.md show are run as shown (those that run offline on a tiny
volume), and checked against what the docs say about them: they parse, give the exit code the docs
state, and print the output the docs quote (the plan tables). Every other command is in SKIPPED
with the reason; a command the docs show that is neither run nor skipped fails the test, so a new
doc command cannot drift unnoticed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import docs_commands as dc
import wanvolume
from wan_engine.store import profiles

REPO = dc.REPO
SHOWN = dc.all_commands()

# wanvolume.py sub-commands that run offline on a tiny volume in about a second (plan: see below)
RUNNABLE = {"status", "check", "verify", "adopt", "plan", "--help"}

# What is not run, and why (matched against the command with its VAR=value prefixes removed).
SKIPPED = {
    r"^python wanvolume\.py preload\b|^wanvolume\.py preload\b":
        "downloads from the Hugging Face Hub (network); its options are checked against the parser",
    r"wanvolume\.py plan --set comfy/wan2\.2_":
        "needs the header-only full-size Wan2.2 set (tests/test_plan_wan22.py runs this plan)",
    r"wanvolume\.py plan .*--simulate":
        "minutes of CPU (the simulation); its options are checked against the parser",
    r"^(hf|huggingface-cli) ":
        "downloads from the Hugging Face Hub (network); its options are checked against `hf download --help`",
    r"^bash (scripts/(demo|test|floors|setup)\.sh|\.ci/run)":
        "sets up virtual environments, runs the whole suite or the demo (minutes; CI runs them)",
    r" -m pytest ": "a test run: part of the suite itself",
    r"bench/gpu_(bench|check)\.py": "needs a GPU",
    r"bench/": "a benchmark: long-running (tests/test_bench_smoke.py runs the benches' smoke modes)",
    r"install\.py": "installs packages into ComfyUI's python (tests/test_install*.py)",
    r"^(cd|git) ": "a step in the user's own ComfyUI checkout",
    r"^docker ": "needs Docker",
    r"scripts/runpod_client\.py": "calls a RunPod endpoint (network); tests/test_runpod_serverless.py runs "
                                  "it against a loopback stand-in of the endpoint and worker-comfyui",
    r"^pip3? install --dry-run": "resolves against PyPI (network); tests/test_docker.py runs it, skipping offline",
}

# Exit codes the docs state in words: (doc, the sentence, argv, extra env, exit code, text in output).
# "{empty}" is an empty models dir, "{missing}" one that does not exist.
STATED_EXITS = [
    ("docs/volume.md",
     "`HF_HUB_OFFLINE=1` makes `preload` stop with exit 3 and a message naming the variable",
     ["preload", "--profile", "kissing-lora", "--models-dir", "{empty}", "-q"], {"HF_HUB_OFFLINE": "1"},
     3, "HF_HUB_OFFLINE"),
    ("docs/volume.md", "A `--models-dir` that does not exist or is a file is named as such (exit 2)",
     ["check", "--models-dir", "{missing}"], {}, 2, "{missing}"),
]


def _plain(cmd: dc.Shown) -> str:
    env, words = cmd.env_and_argv()
    return " ".join(words)


def _skip_reason(cmd: dc.Shown) -> str | None:
    return next((why for pattern, why in SKIPPED.items() if re.search(pattern, _plain(cmd))), None)


def _runnable(cmd: dc.Shown) -> bool:
    args = cmd.wanvolume_args()
    return (args is not None and bool(args) and args[0] in RUNNABLE and not cmd.is_synopsis()
            and _skip_reason(cmd) is None)


def _env(models_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_CACHE_DIR", "HF_ENDPOINT")}
    env.update(WAN_VOLUME_MODELS_DIR=str(models_dir), WAN_VOLUME_HF_CACHE="off", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def results(tiny_volume_template: Path, tmp_path_factory) -> dict[str, dict]:
    """Every runnable documented command, run once on a writable copy of the tiny volume (verify
    and adopt may write the manifest): plan in one process (it imports torch and diffusers once),
    the others each in its own ``python wanvolume.py`` process."""
    volume = tmp_path_factory.mktemp("docs") / "models"
    shutil.copytree(tiny_volume_template, volume)
    todo = {_plain(c): c for c in SHOWN if _runnable(c)}
    out: dict[str, dict] = {}
    plans = {k: c for k, c in todo.items() if c.wanvolume_args()[0] == "plan"}
    if plans:
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "docs_commands.py"),
                               json.dumps([c.wanvolume_args() for c in plans.values()])],
                              capture_output=True, text=True, cwd=REPO, env=_env(volume, {}), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.update(zip(plans, json.loads(proc.stdout)))
    for key, cmd in todo.items():
        if key in plans:
            continue
        env, _ = cmd.env_and_argv()
        proc = subprocess.run([sys.executable, "wanvolume.py", *cmd.wanvolume_args()], capture_output=True,
                              text=True, cwd=REPO, env=_env(volume, env), timeout=120)
        out[key] = {"code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    return out


def test_the_docs_show_the_commands_this_test_knows():
    texts = {_plain(c) for c in SHOWN}
    assert "python wanvolume.py status" in texts and "python wanvolume.py check" in texts
    quoted = [c for c in SHOWN if c.output]
    assert len(quoted) >= 4, [c.where for c in quoted]          # the plan tables of README and memory.md
    assert all(c.wanvolume_args() and c.wanvolume_args()[0] == "plan" for c in quoted)


def test_every_documented_command_is_run_or_skipped_for_a_stated_reason():
    unknown = [f"{c.where}: {c.text}" for c in SHOWN
               if not _runnable(c) and _skip_reason(c) is None
               and not (c.is_synopsis() and c.wanvolume_args() is not None)]
    assert not unknown, ("commands the docs show that this test neither runs nor skips with a reason "
                         "(add them to RUNNABLE or SKIPPED in tests/test_docs_commands.py):\n"
                         + "\n".join(unknown))


def _subparsers() -> dict:
    parser = wanvolume._parser()
    action = next(a for a in parser._actions if a.choices and "plan" in a.choices)
    return {"": parser, **action.choices}


@pytest.mark.parametrize("cmd", [c for c in SHOWN if c.wanvolume_args() is not None], ids=lambda c: c.where)
def test_wanvolume_command_parses(cmd: dc.Shown):
    """Every sub-command and option a doc names exists; concrete commands parse as written."""
    args = cmd.wanvolume_args()
    subs = _subparsers()
    if not args:
        return                                    # `wanvolume.py` named as a file
    sub = args[0] if not args[0].startswith("-") else ""
    assert sub in subs, f"{cmd.where}: no sub-command {sub!r} in wanvolume.py: {cmd.text}"
    known = set(subs[sub]._option_string_actions)
    words = [w.strip("[]") for w in args]
    for word in words:
        if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", word):
            option = word.split("=")[0]
            assert option in known, f"{cmd.where}: `{sub}` has no option {option}: {cmd.text}"
    for option, value in zip(words, words[1:]):
        if option == "--profile" and not dc.PLACEHOLDER.search(value):
            assert value in profiles.PROFILES, f"{cmd.where}: no profile {value!r}: {cmd.text}"
    if not cmd.is_synopsis() and args[0] != "--help" and len(args) > 1:   # `wanvolume.py preload`: a name
        wanvolume._parser().parse_args(args)      # SystemExit(2) on a usage error


@pytest.fixture(scope="module")
def hf_download_help() -> str:
    hf = Path(sys.executable).with_name("hf")
    if not hf.exists():
        pytest.skip(f"no `hf` next to {sys.executable} (huggingface_hub >= 1.5 installs it)")
    proc = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:     # the floors' lowest typer lacks click: `hf` itself does not start
        pytest.skip(f"`hf download --help` fails here: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


DOWNLOADS = [c for c in SHOWN if re.match(r"^(hf|huggingface-cli)\b", _plain(c))]


def test_download_commands_are_hf_download():
    """huggingface_hub >= 1.5 has no `huggingface-cli`: shown only in the note on older versions."""
    assert len(DOWNLOADS) >= 5
    for cmd in DOWNLOADS:
        words = _plain(cmd).split()
        if words[0] == "huggingface-cli":
            lines = (REPO / cmd.doc).read_text().splitlines()
            near = " ".join(lines[max(0, cmd.line - 3):cmd.line + 2])
            assert "older than 1.0" in near, f"{cmd.where}: `huggingface-cli` outside the note: {cmd.text}"
        else:
            assert words[1:2] == ["download"], f"{cmd.where}: {cmd.text}"


def test_download_options_are_hf_downloads_own(hf_download_help: str):
    for cmd in DOWNLOADS:
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", cmd.text):
            assert option in hf_download_help, f"{cmd.where}: `hf download` has no option {option}"


@pytest.mark.parametrize("cmd", [c for c in SHOWN if _runnable(c)], ids=lambda c: f"{c.where} {c.text}")
def test_documented_command_runs_and_prints_what_the_docs_quote(cmd: dc.Shown, results):
    res = results[_plain(cmd)]
    # 0 ready / 1 not ready; 6: verify on a set filled by hand (the tiny volume has no recorded
    # hashes), as docs/volume.md's exit-code table says
    outcomes = (0, 1, 6) if cmd.wanvolume_args()[0] == "verify" else (0, 1)
    assert res["code"] in outcomes, (f"{cmd.where}: `{cmd.text}` exited {res['code']} ({outcomes} are "
                                     f"the documented outcomes):\n{res['stderr'][-2000:]}")
    assert "Traceback" not in res["stderr"], res["stderr"][-2000:]
    if cmd.output:
        printed = [line.rstrip() for line in res["stdout"].splitlines()]
        quoted = [line for line in cmd.output if line.strip()]
        at = next((i for i in range(len(printed)) if printed[i:i + len(quoted)] == quoted), None)
        assert at is not None, (f"{cmd.where}: the output the docs quote for `{cmd.text}` is not what it "
                                "prints now; it prints:\n" + res["stdout"])


@pytest.mark.parametrize("doc,sentence,argv,extra,code,needle", STATED_EXITS,
                         ids=[f"{s[2][0]}-exit{s[4]}" for s in STATED_EXITS])
def test_exit_code_the_docs_state(doc, sentence, argv, extra, code, needle, tmp_path):
    text = " ".join((REPO / doc).read_text().split())
    assert sentence in text, f"{doc} no longer says: {sentence!r} (update STATED_EXITS with it)"
    (tmp_path / "empty").mkdir()
    fill = {"{empty}": str(tmp_path / "empty"), "{missing}": str(tmp_path / "missing")}
    argv = [fill.get(a, a) for a in argv]
    proc = subprocess.run([sys.executable, "wanvolume.py", *argv], capture_output=True, text=True,
                          cwd=REPO, env=_env(tmp_path / "empty", extra), timeout=120)
    assert proc.returncode == code, (argv, proc.returncode, proc.stdout, proc.stderr)
    assert fill.get(needle, needle) in proc.stdout + proc.stderr


def test_adopt_and_verify_name_a_changed_byte_as_the_docs_say(tiny_volume_template: Path, tmp_path):
    """docs/volume.md: `adopt` hashes an `hf download --local-dir` folder against the Hub's record,
    a mismatch printed as `MISMATCH <file>: ...` with exit 1; `verify` names a file changed later."""
    from hf_local_fixtures import flip_byte, write_hf_lora

    sentence = "Mismatches are printed as `MISMATCH <file>: ...` (exit 1)"
    assert sentence in " ".join((REPO / "docs/volume.md").read_text().split())
    lora = tiny_volume_template / "loras" / "tiny_kissing_style_lora.safetensors"

    def run(vol: Path, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "wanvolume.py", *argv], capture_output=True, text=True,
                              cwd=REPO, env=_env(vol, {}), timeout=120)

    for changed_before_adopt in (True, False):
        vol = tmp_path / f"models-{changed_before_adopt}"
        target = write_hf_lora(vol / "kissing-lora", lora) / "kissing_30_epochs.safetensors"
        if changed_before_adopt:
            flip_byte(target, target.stat().st_size - 10)
        adopted = run(vol, "adopt", "kissing-lora")
        if not changed_before_adopt:
            assert adopted.returncode == 0, adopted.stdout + adopted.stderr
            clean = run(vol, "verify")
            assert clean.returncode == 0, clean.stdout + clean.stderr
            flip_byte(target, target.stat().st_size - 10)
        res = adopted if changed_before_adopt else run(vol, "verify")
        assert res.returncode == 1 and f"MISMATCH {target}: " in res.stdout, res.stdout + res.stderr
