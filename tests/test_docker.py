"""The Docker files as far as a machine without a Docker daemon can check them.

docker/start.sh runs for real (bash, the pack's own `wanvolume.py check`) against a ready and an
empty volume, with COMFYUI_DIR / WAN_VOLUME_PACK_DIR pointing at temporary folders and
WAN_VOLUME_NEXT at a tiny script, so nothing long-running starts. Both Dockerfiles are parsed
(tests/docker_parse.py): their COPY sources, the .dockerignore BuildKit applies, the start script,
the ENV names, and a `pip install --dry-run` of the requirements line with this venv's torch."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from docker_parse import DockerIgnore, copies, parse

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
START = DOCKER / "start.sh"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.serverless"]
RECORDER = """#!{python}
import os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write("{what} " + " ".join(sys.argv[1:]) + "\\n")
{tail}
"""


def _script(path: Path, what: str, tail: str = "") -> Path:
    path.write_text(RECORDER.format(python=sys.executable, what=what, tail=tail))
    path.chmod(0o755)
    return path


@pytest.fixture
def start_env(tmp_path: Path) -> dict:
    """A fake /comfyui whose main.py records how it was started, a python that records each
    `wanvolume.py` call and runs it, and a WAN_VOLUME_NEXT that records that it ran."""
    comfy = tmp_path / "comfyui"
    comfy.mkdir()
    _script(comfy / "main.py", "main.py")
    py = _script(tmp_path / "python", "python", tail=f"os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAN_VOLUME_", "MODEL_CACHE_DIR"))}
    env |= {"COMFYUI_DIR": str(comfy), "WAN_VOLUME_PACK_DIR": str(REPO), "WAN_VOLUME_PYTHON": str(py),
            "WAN_VOLUME_HF_CACHE": "off", "HF_HUB_OFFLINE": "1", "RECORD": str(tmp_path / "calls.txt")}
    return env


def run_start(env: dict, models: Path, **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = env | {"WAN_VOLUME_MODELS_DIR": str(models)} | extra
    proc = subprocess.run(["bash", str(START)], env=env, capture_output=True, text=True, timeout=120)
    record = Path(env["RECORD"])
    return proc, record.read_text().splitlines() if record.exists() else []


def test_ready_volume_hands_over_to_next(start_env, tiny_volume, tmp_path):
    nxt = _script(tmp_path / "next.sh", "next")
    proc, calls = run_start(start_env, tiny_volume, WAN_VOLUME_NEXT=str(nxt), WAN_VOLUME_REQUIRE_READY="1")
    assert proc.returncode == 0, proc.stderr
    assert "volume ready" in proc.stdout
    assert calls == [f"python {REPO}/wanvolume.py check", "next "]


def test_ready_volume_starts_comfyui_with_the_volume_paths(start_env, tiny_volume):
    proc, calls = run_start(start_env, tiny_volume, COMFYUI_ARGS="--lowvram")
    assert proc.returncode == 0, proc.stderr
    comfy = start_env["COMFYUI_DIR"]
    assert calls[-1] == (f"main.py --listen 0.0.0.0 --port 8188 --extra-model-paths-config "
                         f"{comfy}/extra_model_paths.yaml --lowvram")


def test_empty_volume_starts_anyway_and_never_preloads(start_env, tmp_path):
    """WAN_VOLUME_PRELOAD empty (the Serverless image's value): check fails, nothing is fetched,
    the worker still starts (its jobs then get the pack's 'no such model set' error)."""
    empty = tmp_path / "models"
    empty.mkdir()
    nxt = _script(tmp_path / "next.sh", "next")
    proc, calls = run_start(start_env, empty, WAN_VOLUME_NEXT=str(nxt), WAN_VOLUME_PRELOAD="")
    assert proc.returncode == 0, proc.stderr
    assert "volume NOT ready" in proc.stdout and "wanvolume.py preload --profile" in proc.stdout
    assert not any("preload" in c for c in calls)
    assert calls[-1] == "next "


def test_empty_volume_with_require_ready_exits_with_checks_code(start_env, tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    nxt = _script(tmp_path / "next.sh", "next")
    proc, calls = run_start(start_env, empty, WAN_VOLUME_NEXT=str(nxt), WAN_VOLUME_REQUIRE_READY="1")
    assert proc.returncode == 1
    assert "WAN_VOLUME_REQUIRE_READY=1, so not starting ComfyUI" in proc.stderr
    assert calls == [f"python {REPO}/wanvolume.py check"]          # neither ComfyUI nor NEXT ran


def test_preload_runs_each_profile_and_stops_at_its_failure(start_env, tmp_path):
    """WAN_VOLUME_PRELOAD set (Pods): each profile is fetched; offline here, so the first fetch
    fails and start.sh exits with its code instead of starting ComfyUI."""
    empty = tmp_path / "models"
    empty.mkdir()
    proc, calls = run_start(start_env, empty, WAN_VOLUME_PRELOAD="kissing-lora comfy-480p-fp8")
    assert proc.returncode not in (0, 1), proc.stderr        # preload's own code (Hub refused)
    assert "WAN_VOLUME_PRELOAD names kissing-lora" in proc.stderr
    assert calls[1] == f"python {REPO}/wanvolume.py preload --profile kissing-lora"
    assert not any("comfy-480p-fp8" in c or c.startswith("main.py") for c in calls)


def test_missing_comfyui_dir_is_named(start_env, tmp_path):
    proc, _ = run_start(start_env, tmp_path, COMFYUI_DIR=str(tmp_path / "nope"))
    assert proc.returncode == 1 and f"COMFYUI_DIR={tmp_path / 'nope'} does not exist" in proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_reach_the_build(dockerfile):
    ignore = DockerIgnore.read(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    found = copies(parse(dockerfile))
    assert found
    for sources, _dest, line in found:
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile.name}:{line}: COPY {src}: not in the repo"
            if src != ".":
                assert ignore.excluded_by(src) is None, f"{dockerfile.name}:{line}: {src} is dockerignored"
    # `COPY . <pack>` sends the pack's code and leaves the venvs, caches and .git out.
    for needed in ("wanvolume.py", "__init__.py", "nodes/loader.py", "wan_engine/store/find.py",
                   "web/js/run_report.js", "workflows/api/kiss_i2v_480p.json"):
        assert ignore.excluded_by(needed) is None, needed
    for left_out in (".git/HEAD", ".venv/bin/python", ".cache/x", "nodes/__pycache__/a.pyc", ".comfyui/main.py"):
        assert ignore.excluded_by(left_out), left_out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_cmd_script_is_copied_and_made_executable(dockerfile):
    ins = parse(dockerfile)
    cmd = [i for i in ins if i.name == "CMD"][-1].words()[0]
    copy_line = next(line for srcs, dest, line in copies(ins) if dest == cmd)
    src = next(srcs[0] for srcs, dest, _ in copies(ins) if dest == cmd)
    assert (REPO / src).read_text().startswith("#!/usr/bin/env bash")
    assert (REPO / src).stat().st_mode & stat.S_IXUSR, f"{src} is not executable in the repo"
    assert any(i.name == "RUN" and f"chmod +x {cmd}" in i.args and i.line > copy_line for i in ins)
    subprocess.run(["bash", "-n", str(REPO / src)], check=True)        # it parses


def _start_sh_names() -> set[str]:
    return set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", START.read_text()))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_env_names_are_read(dockerfile):
    """A WAN_VOLUME_* ENV that start.sh does not read is a typo; the rest are the tools' own."""
    tools = {"DEBIAN_FRONTEND", "PIP_NO_CACHE_DIR", "PYTHONUNBUFFERED", "HF_HUB_DISABLE_TELEMETRY"}
    names = {k for i in parse(dockerfile) if i.name == "ENV" for k in i.env_pairs()}
    assert names
    for name in names:
        assert name in _start_sh_names() or name in tools, f"{dockerfile.name}: ENV {name} is read by nothing"


def test_serverless_image_hands_over_to_the_workers_start_script():
    """worker-comfyui's image starts with /start.sh (ComfyUI + handler); ours must not overwrite it."""
    ins = parse(DOCKER / "Dockerfile.serverless")
    env = {k: v for i in ins if i.name == "ENV" for k, v in i.env_pairs().items()}
    assert env["WAN_VOLUME_PRELOAD"] == "" and env["WAN_VOLUME_NEXT"] == "/start.sh"
    assert "/start.sh" not in [dest for _, dest, _ in copies(ins)]
    assert next(i for i in ins if i.name == "FROM").args == "${BASE}"
    assert any(i.name == "ARG" and i.args.startswith("BASE=runpod/worker-comfyui:") for i in ins)


def test_pip_line_resolves_with_the_torch_pins(tmp_path):
    """Both images' `pip install -c torch-pins -r requirements.txt`, dry run with this venv's torch:
    each requirement has a release for this Python that the pins allow."""
    for dockerfile in DOCKERFILES:
        ins = parse(dockerfile)
        run_line = next(i.args for i in ins if i.name == "RUN" and "-r /comfyui/custom_nodes" in i.args)
        assert "-c /tmp/torch-pins.txt" in run_line and "pip install" in run_line
        assert any("/tmp/torch-pins.txt" in i.args and "pip freeze" in i.args for i in ins if i.name == "RUN")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    pins = tmp_path / "torch-pins.txt"
    pins.write_text("".join(f"{line}\n" for line in freeze.splitlines()
                            if re.match(r"(?i)^(torch|torchvision|torchaudio)==", line)))
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                           "--quiet", "--report", str(report), "-c", str(pins), "-r", str(REPO / "requirements.txt")],
                          capture_output=True, text=True, timeout=150)
    if proc.returncode and re.search(r"(?i)connection|network|resolve host|timed out|Max retries", proc.stderr):
        pytest.skip(f"PyPI unreachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    import json

    names = {i["metadata"]["name"].lower().replace("_", "-") for i in json.loads(report.read_text())["install"]}
    wanted = {re.split(r"[<>=!~ ;#\[]", line.strip())[0].lower().replace("_", "-")
              for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert wanted and wanted <= names, wanted - names
