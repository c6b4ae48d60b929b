""".ci/run runs every job, prints each job's time and exits non-zero when any job fails.

The real .ci/run is copied into a scratch tree whose scripts/test.sh and scripts/floors.sh are
stand-ins that record how they were called and exit as told, so the jobs' wiring (which ComfyUI,
which pytest selection, which artifacts folder) is checked without installing anything.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

STAND_IN = """#!/usr/bin/env bash
echo "$(basename "$0") comfy=${WANVOLUME_COMFY:-default} art=$WANVOLUME_ARTIFACTS args=$*" >> "$CALLS"
exit "${EXIT_FOR:-0}"
"""


def ci_tree(tmp_path: Path, failing: str = "") -> Path:
    root = tmp_path / "clone"
    (root / ".ci").mkdir(parents=True)
    (root / "scripts").mkdir()
    shutil.copy(REPO / ".ci" / "run", root / ".ci" / "run")
    for name in ("test.sh", "floors.sh"):
        text = STAND_IN.replace('"${EXIT_FOR:-0}"', "3" if name == failing else "0")
        (root / "scripts" / name).write_text(text)
    return root


def run_ci(root: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = root / "calls.txt"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "WANVOLUME_"))}
    got = subprocess.run(["bash", str(root / ".ci" / "run")], capture_output=True, text=True,
                         env={**clean, "CALLS": str(calls), **env}, timeout=120)
    return got, calls.read_text().splitlines() if calls.exists() else []


def test_all_jobs_run_with_their_comfyui_and_selection(tmp_path):
    root = ci_tree(tmp_path)
    got, calls = run_ci(root)
    assert got.returncode == 0, got.stdout + got.stderr
    art = root / "test-artifacts"
    assert calls == [f"test.sh comfy=default art={art}/full-0.3.75 args=-q",
                     f"test.sh comfy=0.28 art={art}/server-0.28 args=-q -m server or browser",
                     f"floors.sh comfy=default art={art}/floors args="]
    for job in ("full-0.3.75", "server-0.28", "floors"):
        assert (art / f"{job}.log").is_file()
        assert any(line.startswith(f"[ci] {job}") and " ok " in line for line in got.stdout.splitlines())


@pytest.mark.parametrize("failing", ["test.sh", "floors.sh"])
def test_a_failing_job_fails_the_run_and_the_others_still_run(tmp_path, failing):
    root = ci_tree(tmp_path, failing=failing)
    got, calls = run_ci(root)
    assert got.returncode == 1
    assert len(calls) == 3                                      # no job skipped after a failure
    assert "FAILED (exit 3)" in got.stdout and "[ci] failed:" in got.stderr


def test_ci_jobs_picks_a_subset_and_refuses_an_unknown_job(tmp_path):
    root = ci_tree(tmp_path)
    got, calls = run_ci(root, CI_JOBS="floors")
    assert got.returncode == 0 and [c.split()[0] for c in calls] == ["floors.sh"]
    bad, _ = run_ci(root, CI_JOBS="nightly")
    assert bad.returncode == 2 and "unknown job 'nightly'" in bad.stderr
