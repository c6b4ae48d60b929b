"""The suite runs against the ComfyUI that COMFYUI_DIR names (0.3.75 or 0.28), and says which.

Pointed at another tree, a test that hard-codes ``.comfyui`` silently tests the default one: these
tests hold the one place that resolves the tree (scripts/comfy_headless.py), the shell side that
picks tree and venv (scripts/env.sh), and that the server and the in-process ComfyUI are the tree
COMFYUI_DIR names. The server tests record where 0.28 differs and what the pack does about it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import comfy_headless
from helpers import REPO, sampler_refusal

# files that may name the default tree: the resolver itself, and this test (env.sh's defaults)
MAY_NAME_TREE = {"scripts/comfy_headless.py", "tests/test_comfy_versions.py"}


def _python_sources() -> list[Path]:
    return sorted(p for d in ("tests", "bench", "scripts", "nodes", "wan_engine")
                  for p in (REPO / d).rglob("*.py"))


def test_no_test_or_bench_hard_codes_the_comfyui_tree():
    offenders = []
    for path in _python_sources():
        rel = path.relative_to(REPO).as_posix()
        if rel in MAY_NAME_TREE:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["']\.comfyui(-[0-9.]+)?["']""", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, ("these ignore COMFYUI_DIR; use comfy_headless.comfyui_dir() or "
                           "import_comfyui():\n" + "\n".join(offenders))


def test_comfyui_dir_and_version_follow_COMFYUI_DIR(tmp_path, monkeypatch):
    (tmp_path / "main.py").write_text("")
    (tmp_path / "comfyui_version.py").write_text('__version__ = "9.8.7"\n')
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path))
    assert comfy_headless.comfyui_dir() == tmp_path.resolve()
    assert comfy_headless.comfyui_version() == (9, 8, 7)
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match=r"no ComfyUI at .*nowhere.*COMFYUI_DIR"):
        comfy_headless.comfyui_dir()


def test_in_process_comfy_is_imported_from_COMFYUI_DIR():
    """What test_memory, test_node_validation and the LoRA oracle import is the named tree."""
    code = ("import sys; sys.path.insert(0, 'scripts'); import comfy_headless;"
            "comfy_headless.import_comfyui(front=True); import comfy.cli_args, comfyui_version;"
            "print(comfy.cli_args.__file__); print(comfyui_version.__version__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    tree = comfy_headless.comfyui_dir()
    assert Path(out[0]).resolve().is_relative_to(tree)
    assert tuple(int(p) for p in out[1].split(".")) == comfy_headless.comfyui_version()


def _env_sh(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("COMFYUI_DIR", "WANVOLUME_COMFY", "WANVOLUME_VENV", "WANVOLUME_PYTHON")}
    script = 'source scripts/env.sh && echo "$WANVOLUME_COMFY|$COMFYUI_DIR|$PY"'
    return subprocess.run(["bash", "-c", script], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("version,tree,venv", [
    ("0.3.75", ".comfyui", ".venv"), ("0.28", ".comfyui-0.28", ".venv-0.28"),
    ("0.28.0", ".comfyui-0.28", ".venv-0.28")])
def test_env_sh_picks_tree_and_venv_per_version(version, tree, venv):
    got = _env_sh(WANVOLUME_COMFY=version)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().split("|") == [version[:4] if version != "0.3.75" else version,
                                             str(REPO / tree), str(REPO / venv / "bin" / "python")]


def test_env_sh_keeps_your_own_tree_and_refuses_an_unknown_version(tmp_path):
    got = _env_sh(COMFYUI_DIR=str(tmp_path), WANVOLUME_VENV=str(tmp_path / "v"))
    assert got.stdout.strip().split("|")[1:] == [str(tmp_path), str(tmp_path / "v" / "bin" / "python")]
    bad = _env_sh(WANVOLUME_COMFY="0.99")
    assert bad.returncode == 2 and "WANVOLUME_COMFY=0.99" in bad.stderr and "COMFYUI_DIR" in bad.stderr


# -- through the real server, on whichever version COMFYUI_DIR names ------------------------------

@pytest.mark.server
def test_the_server_is_the_comfyui_COMFYUI_DIR_names(comfy_server):
    reported = comfy_server.get_json("/system_stats")["system"]["comfyui_version"]
    assert tuple(int(p) for p in reported.split(".")) == comfy_headless.comfyui_version()


@pytest.mark.server
@pytest.mark.parametrize("field,value", [("sampler", "no-such-sampler"), ("schedule", "")])
def test_a_bad_combo_gets_our_message_on_every_version(comfy_server, field, value):
    """0.28 checks V3 COMBO values itself ("Value not in list", no fix); 0.3.75 skips V3 COMBOs.

    On both, a node whose validate_inputs takes **kwargs skips ComfyUI's own check, so the
    refusal is the pack's: the field, the value and the fix.
    """
    image = comfy_server.upload_image(REPO / "assets" / "two_people.png")
    errors = sampler_refusal(comfy_server, image, field, value)
    assert not any(e["type"] == "value_not_in_list" for e in errors), errors
    assert any(f"{field} = {value!r}" in e["details"] and "Fix:" in e["details"] for e in errors), errors
