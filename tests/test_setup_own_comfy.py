"""The "use your own ComfyUI" path (COMFYUI_DIR + WANVOLUME_PYTHON): scripts/setup.sh, run in its
dry-run mode, puts only the pack's runtime requirements into that interpreter (through install.py);
pytest and playwright go only into the repo's own venv."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEV_TOOLS = ("requirements-dev", "pytest", "playwright")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text("")
    (comfy / "comfyui_version.py").write_text('__version__ = "0.3.75"\n')
    (comfy / "requirements.txt").write_text("numpy>=1.25.0\n")
    return comfy


def _env(**over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COMFYUI_DIR", "WANVOLUME_COMFY", "WANVOLUME_VENV", "WANVOLUME_PYTHON")}
    env.update(WANVOLUME_SETUP_DRY_RUN="1", PIP_NO_INDEX="1", **over)
    return env


def _setup(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)


def test_own_interpreter_gets_only_the_runtime_requirements(tree: Path):
    """The interpreter here stands in for a user's ComfyUI python (it has torch and the pack's needs)."""
    before = sorted(p.name for p in tree.iterdir())
    out = _setup(_env(COMFYUI_DIR=str(tree), WANVOLUME_PYTHON=sys.executable))
    assert out.returncode == 0, out.stdout + out.stderr
    text = (out.stdout + out.stderr).replace(str(tree), "<tree>")
    assert "install.py; test tools stay out" in text
    assert "ComfyUI's core packages from: <tree>/requirements.txt" in text
    assert "nothing to install" in text
    assert "would run" not in text  # no pip command of setup.sh's own, no torch, no ComfyUI requirements
    assert not [t for t in DEV_TOOLS if t in text], text
    assert sorted(p.name for p in tree.iterdir()) == before  # no stamp written into the user's tree
    runtime = (REPO / "requirements.txt").read_text()  # what install.py plans from
    assert not [t for t in DEV_TOOLS if t in runtime]


def test_repo_venv_gets_the_test_tools(tree: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    out = _setup(_env(COMFYUI_DIR=str(tree), WANVOLUME_VENV=str(venv)))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[setup] would run:")]
    assert f"[setup] would run: python3 -m venv {venv}" in lines
    pips = [ln for ln in lines if " -m pip " in ln]
    assert all(ln.split("would run: ")[1].startswith(f"{venv}/bin/python -m pip") for ln in pips), pips
    assert any("-r requirements.txt -r requirements-dev.txt" in ln for ln in pips), pips
    assert not venv.exists()  # dry run: nothing created


def test_own_interpreter_without_test_tools_is_told_not_changed(tmp_path: Path, tree: Path):
    bare = tmp_path / "bare"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(bare)], check=True)
    py = bare / "bin" / "python"
    out = subprocess.run(["bash", str(REPO / "scripts" / "test.sh")], capture_output=True, text=True,
                         env=_env(COMFYUI_DIR=str(tree), WANVOLUME_PYTHON=str(py)), timeout=60, cwd=REPO)
    assert out.returncode == 2
    assert f"WANVOLUME_PYTHON={py} lacks the test tools (requirements-dev.txt)" in out.stderr
    assert "-m pip install -r requirements-dev.txt" in out.stderr
    assert "[setup]" not in out.stdout + out.stderr  # setup never ran
    setup = _setup(_env(COMFYUI_DIR=str(tree), WANVOLUME_PYTHON=str(py)))
    assert setup.returncode == 2
    assert f"WANVOLUME_PYTHON={py} has no torch" in setup.stderr
