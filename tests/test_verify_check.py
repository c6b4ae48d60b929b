"""verify (deep re-hash) and check (fast sizes + headers), and the manifest's public API."""
from __future__ import annotations

import struct
from pathlib import Path

from hf_local_fixtures import flip_byte
from volume_fixtures import cli, fast_policy, hub, models_dir  # noqa: F401

from wan_engine.store import check as chk
from wan_engine.store import manifest as mf
from wan_engine.store import preload as pl
from wan_engine.store import profiles
from wan_engine.store.verify import verify


def _fill(models_dir: Path) -> None:
    pl.preload("tiny", (profiles.repo_source("acme/tiny"),), models_dir, policy=fast_policy(),
               show_progress=False)




def test_verify_passes_then_catches_a_flipped_byte(hub, models_dir):
    _fill(models_dir)
    ok = cli("verify", "--models-dir", str(models_dir), "--workers", "2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified 3 files" in ok.stdout
    target = models_dir / "tiny" / "model.safetensors"
    flip_byte(target, target.stat().st_size - 10)
    bad = cli("verify", "--models-dir", str(models_dir))
    assert bad.returncode == 1
    assert f"MISMATCH {target}" in bad.stdout
    assert "weights.pth" not in bad.stdout and "config.json" not in bad.stdout


def test_verify_reports_missing_and_resized_files(hub, models_dir):
    _fill(models_dir)
    (models_dir / "tiny" / "config.json").unlink()
    with open(models_dir / "tiny" / "sub" / "weights.pth", "ab") as fh:
        fh.write(b"extra")
    report = verify(models_dir, show_progress=False)
    assert not report.ok
    assert report.bad["tiny/config.json"] == "missing"
    assert report.bad["tiny/sub/weights.pth"].startswith("size ")


def test_verify_with_nothing_preloaded_fails_with_command(models_dir):
    res = cli("verify", "--models-dir", str(models_dir))
    assert res.returncode == 1 and "preload --profile" in res.stdout


def test_public_api_find_manifest_entry_and_sha256_matches(hub, models_dir):
    _fill(models_dir)
    path = models_dir / "tiny" / "model.safetensors"
    entry = mf.find_manifest_entry(path)
    assert entry is not None
    assert (entry.relpath, entry.size, entry.repo) == ("tiny/model.safetensors",
                                                       path.stat().st_size, "acme/tiny")
    assert entry.revision == hub.state.repos["acme/tiny"].commit
    assert mf.sha256_matches(path)
    flip_byte(path, 1000)
    assert not mf.sha256_matches(path)
    stray = models_dir / "stray.safetensors"
    stray.write_bytes(b"x")
    assert mf.find_manifest_entry(stray) is None and not mf.sha256_matches(stray)


def test_check_ready_then_names_missing_file_and_exact_command(hub, models_dir):
    _fill(models_dir)
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 0 and "volume ready" in res.stdout
    (models_dir / "tiny" / "model.safetensors").unlink()
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 1
    assert "tiny/model.safetensors: missing" in res.stdout
    assert (f"python wanvolume.py preload --repo acme/tiny --revision main --models-dir "
            f"{models_dir}") in res.stdout


def test_check_catches_bad_headers_of_right_size(hub, models_dir):
    _fill(models_dir)
    st = models_dir / "tiny" / "model.safetensors"
    with open(st, "r+b") as fh:
        fh.write(struct.pack("<Q", 12))               # header length that does not fit
    pth = models_dir / "tiny" / "sub" / "weights.pth"
    data = bytearray(pth.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end:end + 4] = b"XXXX"                        # zip end record gone: truncated look
    pth.write_bytes(bytes(data))
    report = chk.check(models_dir)
    assert not report.ok
    problems = "\n".join(report.sets[0].problems)
    assert "tiny/model.safetensors" in problems and "tiny/sub/weights.pth" in problems
    assert "config.json" not in problems


def test_check_profile_not_preloaded_names_the_profile_command(models_dir):
    res = cli("check", "--models-dir", str(models_dir), "--profile", "comfy-720p-fp8")
    assert res.returncode == 1
    assert f"python wanvolume.py preload --profile comfy-720p-fp8 --models-dir {models_dir}" in res.stdout


def test_check_unfinished_preload_is_not_ready(hub, models_dir):
    _fill(models_dir)
    mf.clear_marker(models_dir, "tiny")
    report = chk.check(models_dir)
    assert not report.ok and "no ready marker" in report.message()


def test_check_is_header_only_on_large_sparse_files(tmp_path):
    """A 20 GB sparse safetensors file checks without reading its body."""
    d = tmp_path / "models"
    f = d / "big" / "x.safetensors"
    f.parent.mkdir(parents=True)
    size = 20 * 2**30
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,%d]}}' % (size - 8 - 64)
    header = header.ljust(64)
    with open(f, "wb") as fh:
        fh.write(struct.pack("<Q", 64) + header)
        fh.truncate(size)
    assert chk.check_file(f, size) is None
    assert chk.check_file(f, size + 1).startswith("size")


def test_check_accepts_a_complete_set_filled_by_hand(tmp_path):
    d = tmp_path / "models"
    root = d / "Hand-Diffusers"
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text('{"transformer": ["diffusers", "WanTransformer3DModel"]}')
    (root / "transformer" / "config.json").write_text("{}")
    report = chk.check(d)
    assert report.ok and "Hand-Diffusers" in report.message()


def test_a_failed_verify_is_remembered_by_check_and_status_until_refetched(hub, models_dir):
    _fill(models_dir)
    target = models_dir / "tiny" / "model.safetensors"
    flip_byte(target, target.stat().st_size - 10)   # the header still reads: only a hash sees it
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0
    assert cli("verify", "--models-dir", str(models_dir)).returncode == 1
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 1 and "volume ready" not in res.stdout
    assert "tiny/model.safetensors: failed verification (SHA-256 " in res.stdout
    assert (f"fetch it with: python wanvolume.py preload --repo acme/tiny --revision main "
            f"--models-dir {models_dir}") in res.stdout
    st = cli("status", "--models-dir", str(models_dir), "--json")
    assert st.returncode == 1
    doc = __import__("json").loads(st.stdout)
    tiny = next(p for p in doc["preloaded"] if p["name"] == "tiny")
    assert tiny["ready"] is False and tiny["verified"] is False
    assert any("failed verification" in p for p in tiny["problems"])
    _fill(models_dir)   # the fix the message names: re-fetches the changed file
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0
    assert cli("verify", "--models-dir", str(models_dir)).returncode == 0
