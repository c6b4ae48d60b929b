"""Issue 24, items 1-4: many processes on one volume (no server; tests/test_shared_volume_soak.py
runs two servers).

- a killed preload of a diffusers set is never offered as complete (dropdown list, status, start-up
  line, ``check``: one line per set, with the command that resumes it) until it is resumed;
- manifest updates from several processes lose no entry and never revive a cleared ready marker;
- a torn manifest is named with the command that rebuilds it; a read-only volume is verified
  (results printed, "could not remember" said once) and ``adopt`` says "read-only";
- the lock file names a live holder only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from volume_fixtures import FAST, ROOT, cli, hub, models_dir, popen, run  # noqa: F401
from wan_engine import tiny_model
from wan_engine.store import check as chk
from wan_engine.store import find, lock, profiles, status
from wan_engine.store import manifest as mf

REPO = "acme/Wan-Tiny-Diffusers"
SET = "Wan-Tiny-Diffusers"


def set_files(template: Path) -> dict[str, bytes]:
    root = template / tiny_model.TINY_SET_NAME
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def wan_hub(hub, tiny_volume_template):
    hub.add_repo(REPO, set_files(tiny_volume_template))
    find.clear_index()
    yield hub
    find.clear_index()


def wait_for(cond, proc, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("condition never met")


def killed_preload(hub, models_dir: Path, files: dict[str, bytes]) -> tuple[str, ...]:
    """A preload killed while only the image encoder's weights are still a .part file."""
    hub.state.throttle_bps = 10_000_000      # ~8 s for the 85 MB image encoder, ~1 s for the rest
    args = ("preload", "--repo", REPO, "--models-dir", str(models_dir), *FAST, "--workers", "3")
    proc = popen(*args)
    root = models_dir / SET
    last = "image_encoder/model.safetensors"
    wait_for(lambda: all((root / rel).is_file() for rel in files if rel != last)
             and (root / f"{last}.part").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    hub.state.throttle_bps = 0
    assert (root / "image_encoder" / "config.json").is_file()
    assert (root / "image_encoder" / "model.safetensors.part").is_file()
    return args


def test_killed_preload_is_never_offered_until_resumed(wan_hub, models_dir, tiny_volume_template):
    args = killed_preload(wan_hub, models_dir, set_files(tiny_volume_template))
    assert SET not in find.complete_set_names()
    with pytest.raises(Exception) as refused:
        find.get_model_set(SET)
    text = str(refused.value)
    assert "model_set = " in text and "not finished" in text
    assert f"preload --repo {REPO} --revision main --models-dir {models_dir}" in text
    doc = status.volume_status(models_dir)
    (entry,) = [s for s in doc["model_sets"] if s["name"] == SET]
    assert not entry["complete"] and "not finished" in entry["unfinished"]
    assert f"--repo {REPO}" in entry["resume"] and not doc["ready"]
    line = status.summary_line(doc)
    assert "0 complete set(s)" in line and "not finished" in line and "NOT ready" in line
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 1
    named = [ln for ln in res.stdout.splitlines() if SET in ln and "--repo" not in ln]
    assert len(named) == 1 and "not finished" in named[0], res.stdout      # one line per set
    assert "filled by hand" not in res.stdout and "resume it with" in res.stdout
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    find.clear_index()
    assert SET in find.complete_set_names() and find.get_model_set(SET).complete
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0


def test_part_file_without_manifest_is_not_finished(tiny_volume_template, models_dir):
    """Killed before its first file was recorded: only the .part files tell."""
    import shutil
    shutil.copytree(tiny_volume_template / tiny_model.TINY_SET_NAME, models_dir / SET)
    weights = models_dir / SET / "vae" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name(weights.name + ".part"))
    find.clear_index()
    assert SET not in find.complete_set_names()
    report = chk.check(models_dir)
    assert [s.name for s in report.sets] == [SET] and "partial (.part)" in report.sets[0].problems[0]


RECORDER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from wan_engine.store import manifest as mf
models, who = Path(sys.argv[1]), sys.argv[2]
for i in range(40):
    mf.record_entries(models, "shared", [mf.ManifestEntry(f"{{who}}/{{i}}.bin", i, "0" * 64, "r", "c")])
"""


def test_four_writers_lose_no_entry(models_dir):
    script = RECORDER.format(root=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(models_dir), f"w{n}"])
             for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert len(mf.load_manifest(models_dir, "shared").entries) == 160


def test_manifest_update_never_revives_a_cleared_marker(models_dir, monkeypatch):
    """A preload clears the marker while verify records hashes: the marker stays cleared."""
    entry = mf.ManifestEntry("s/a.bin", 1, "0" * 64, "r", "c")
    mf.save_manifest(models_dir, mf.Manifest("s", entries={entry.relpath: entry}))
    mf.write_marker(models_dir, "s")
    real_save = mf.save_manifest
    preload = threading.Thread(target=mf.clear_marker, args=(models_dir, "s"))

    def save_while_a_preload_starts(models, man):
        preload.start()          # the preload clears the marker between verify's read and write
        preload.join(0.5)
        real_save(models, man)

    monkeypatch.setattr(mf, "save_manifest", save_while_a_preload_starts)
    mf.record_entries(models_dir, "s", [entry])
    preload.join(10)
    assert not mf.marker_path(models_dir, "s").exists() and not mf.is_marked_ready(models_dir, "s")


def test_torn_manifest_is_named_with_the_command_that_rebuilds_it(hub, models_dir):
    run(models_dir)
    path = mf.manifest_path(models_dir, "tiny")
    path.write_text(path.read_text()[:40])           # torn mid-write by a crash without rename
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 1 and str(path) in res.stdout and "rebuild" in res.stdout, res.stdout
    ver = cli("verify", "--models-dir", str(models_dir))
    assert ver.returncode == 1 and "BROKEN MANIFEST" in ver.stdout and str(path) in ver.stdout
    with pytest.raises(OSError):                      # never overwritten with fewer entries
        mf.record_entries(models_dir, "tiny", [])
    hub.reset_counts()
    assert cli("preload", "--repo", "acme/tiny", "--models-dir", str(models_dir), *FAST).returncode == 0
    assert hub.served() == 0                          # rebuilt by hashing, nothing downloaded
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0


def read_only(models: Path, *args: str) -> subprocess.CompletedProcess:
    """``wanvolume.py args`` with ``models`` bind-mounted read-only (a mount namespace)."""
    inner = (f"mount --bind {models} {models} && mount -o remount,ro,bind {models} && "
             f"exec {sys.executable} {ROOT / 'wanvolume.py'} \"$@\"")
    return subprocess.run(["unshare", "-rm", "sh", "-c", inner, "sh", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_read_only_volume_is_verified_and_says_read_only(tmp_path, models_dir):
    import hf_local_fixtures as hf
    import layout_writers as lw
    from wan_engine.tiny_model import build_components

    hf.write_hf_wan(models_dir / "Wan2.1-I2V-14B-720P", lw.representable(build_components(seed=0)))
    probe = read_only(models_dir, "status", "--models-dir", str(models_dir))
    if probe.returncode != 0 and "mount" in probe.stderr:
        pytest.skip(f"no read-only bind mount here: {probe.stderr.strip()[:200]}")
    ver = read_only(models_dir, "verify", "--models-dir", str(models_dir), "-q")
    assert ver.returncode == 0, ver.stdout + ver.stderr
    assert "verified" in ver.stdout and "OK" in ver.stdout
    assert ver.stdout.count("could not remember") == 1 and "Read-only" in ver.stdout
    assert not mf.state_dir(models_dir).exists()
    ado = read_only(models_dir, "adopt", "--models-dir", str(models_dir), "-q")
    assert ado.returncode == 1 and "read-only" in ado.stdout + ado.stderr
    assert "readable" not in ado.stdout + ado.stderr


HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from wan_engine.store.lock import volume_lock
with volume_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_file_names_only_a_live_holder(models_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT)), str(models_dir)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert lock.holder(models_dir).startswith(f"pid {proc.pid} ")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert f"pid {proc.pid}" in lock.lock_path(models_dir).read_text()   # the kill left it
    assert lock.holder(models_dir) is None
    assert lock.lock_path(models_dir).read_text() == ""
    assert status.volume_status(models_dir)["writer"] is None
