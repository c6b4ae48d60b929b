"""install.py in a throwaway venv: it prints pip's plan before changing anything, refuses to downgrade
or push ComfyUI's core packages past ComfyUI's own pins without the flag, and installs exactly the plan.

Offline: the packages are tiny wheels built here, served to the real pip by --find-links (PIP_NO_INDEX).
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import install  # noqa: E402


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal valid pure-Python wheel with one empty module."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{dist}/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s" % (
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    for v in ("1.0", "2.0", "3.0"):
        _wheel(folder, "wvcore", v)
    _wheel(folder, "wvdep", "1.0", ("wvcore>=2.0",))
    _wheel(folder, "wvextra", "1.5")
    return folder


@pytest.fixture
def comfy(tmp_path: Path, wheels: Path):
    """A venv (pip from the base interpreter), a ComfyUI tree, the pack in its custom_nodes."""
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    if subprocess.run([py, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip(f"the base interpreter {base} has no pip for a --without-pip venv")
    tree = tmp_path / "ComfyUI"
    pack = tree / "custom_nodes" / "ComfyUI-WanVolume"
    pack.mkdir(parents=True)
    (tree / "main.py").write_text("")
    shutil.copy(REPO / "install.py", pack / "install.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "COMFYUI_DIR", "WANVOLUME_"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1")

    def pip(*args: str) -> None:
        subprocess.run([py, "-m", "pip", "install", "-q", *args], check=True, env=env)

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([py, str(pack / "install.py"), *args], capture_output=True, text=True,
                              env={**env, **extra_env}, timeout=120)

    def version(name: str) -> str | None:
        out = subprocess.run([py, "-c", f"from importlib import metadata as m\ntry: print(m.version({name!r}))\n"
                              "except m.PackageNotFoundError: print('-')"], capture_output=True, text=True)
        return None if out.stdout.strip() == "-" else out.stdout.strip()

    def setup(comfy_reqs: str, pack_reqs: str, *installed: str) -> None:
        (tree / "requirements.txt").write_text(comfy_reqs)
        (pack / "requirements.txt").write_text(pack_reqs)
        if installed:
            pip(*installed)

    return setup, run, version


def test_dry_run_prints_the_plan_and_changes_nothing(comfy):
    setup, run, version = comfy
    setup("wvcore\n", "wvdep\nwvextra\n", "wvcore==1.0")
    out = run("--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "upgrade   wvcore 1.0 -> 3.0" in out.stdout
    assert "install   wvdep - -> 1.0" in out.stdout
    assert "install   wvextra - -> 1.5" in out.stdout
    assert "nothing was changed" in out.stdout
    assert (version("wvcore"), version("wvdep"), version("wvextra")) == ("1.0", None, None)
    done = run()  # the real run installs exactly that plan
    assert done.returncode == 0, done.stdout + done.stderr
    assert "upgrade   wvcore 1.0 -> 3.0" in done.stdout
    assert (version("wvcore"), version("wvdep"), version("wvextra")) == ("3.0", "1.0", "1.5")
    again = run()
    assert again.returncode == 0 and "nothing to install" in again.stdout


def test_upgrade_past_comfyuis_pin_is_refused_until_allowed(comfy):
    setup, run, version = comfy
    setup("wvcore>=1.0,<3  # ComfyUI's own pin\n", "wvdep\n", "wvcore==1.0")
    for args in ((), ("--dry-run",)):
        out = run(*args)
        assert out.returncode == install.EXIT_REFUSED, out.stdout + out.stderr
        assert "wvcore: upgrade 1.0 -> 3.0 refused (ComfyUI's requirements.txt asks for wvcore<3,>=1.0)" in out.stdout
        assert "--allow-core or WANVOLUME_INSTALL_ALLOW_CORE=1" in out.stdout
        assert "nothing was installed" in out.stdout
        assert (version("wvcore"), version("wvdep")) == ("1.0", None)
    out = run(WANVOLUME_INSTALL_ALLOW_CORE="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (version("wvcore"), version("wvdep")) == ("3.0", "1.0")


def test_downgrade_of_a_core_package_is_refused(comfy):
    setup, run, version = comfy
    setup("wvcore\n", "wvcore<2\nwvextra\n", "wvcore==3.0")
    out = run()
    assert out.returncode == install.EXIT_REFUSED, out.stdout + out.stderr
    assert "downgrade wvcore 3.0 -> 1.0" in out.stdout
    assert "wvcore: downgrade 3.0 -> 1.0 refused (a downgrade of one of ComfyUI's core packages)" in out.stdout
    assert (version("wvcore"), version("wvextra")) == ("3.0", None)
    out = run("--allow-core")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (version("wvcore"), version("wvextra")) == ("1.0", "1.5")


def test_a_failed_dry_run_installs_nothing(comfy):
    setup, run, version = comfy
    setup("wvcore\n", "wvextra\nwvmissing>=1\n")
    out = run()
    assert out.returncode == install.EXIT_PIP
    assert "pip's dry run failed" in out.stdout and "wvmissing" in out.stdout
    assert version("wvextra") is None


def test_torch_is_never_changed_and_the_core_list_comes_from_comfyui(tmp_path: Path):
    (tmp_path / "main.py").write_text("")
    req = tmp_path / "requirements.txt"
    req.write_text("torch\nnumpy>=1.25.0\n# comment\n--extra-index-url x\npydantic~=2.0\n")
    core = install.core_specs(install.comfy_requirements(tmp_path))
    assert set(core) == {"torch", "torchvision", "torchaudio", "numpy", "pydantic"}
    changes = [install.Change("torch", "2.14.1", "2.15.0"), install.Change("torchaudio", None, "2.11.1"),
               install.Change("numpy", "1.26.4", "2.2.0"), install.Change("pydantic", "2.9.0", "3.0.0"),
               install.Change("peft", None, "0.18.0")]
    why = install.refusals(changes, core)
    assert [w.split(":")[0] for w in why] == ["torch", "torchaudio", "pydantic"]
    assert "ComfyUI owns torch" in why[0]
    assert "asks for pydantic~=2.0" in why[2]
    assert set(install.core_specs(None)) == set(install.DEFAULT_CORE)
