"""check agrees with preload; the CLI names bad arguments and environments, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_hub import tiny_safetensors
from volume_fixtures import cli, hub, models_dir, run  # noqa: F401

from wan_engine.store import check as chk
from wan_engine.store import profiles


def no_traceback(res) -> None:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr


def test_check_ready_right_after_preload_of_a_non_zip_bin(hub, models_dir):
    """A legacy (non-zip) .bin whose SHA-256 matched the Hub: check must not contradict that."""
    legacy = b"\x80\x02}q\x00." + b"\x00" * 4000            # a pickle written by torch < 1.6
    odd = b"GGUF" + b"\x01" * 5000                           # any format the sniff cannot know
    hub.add_repo("acme/bins", {"config.json": b"{}", "pytorch_model.bin": legacy,
                               "other.bin": odd, "model.safetensors": tiny_safetensors(500)})
    run(models_dir, (profiles.repo_source("acme/bins"),), name="bins")
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 0 and "volume ready" in res.stdout, res.stdout
    (models_dir / "bins" / "other.bin").touch()              # mtime moved: the record no longer vouches
    assert chk.check(models_dir).ok, "a .bin is never sniffed as a torch zip"


def test_verified_file_is_trusted_over_a_header_sniff(hub, models_dir):
    """A .pth the preload hashed is not failed by a sniff, even one that would complain."""
    odd_pth = b"NOTZIP" + b"\x00" * 3000
    hub.add_repo("acme/odd", {"weights.pth": odd_pth, "config.json": b"{}"})
    run(models_dir, (profiles.repo_source("acme/odd"),), name="odd")
    assert chk.check(models_dir).ok
    (models_dir / "odd" / "weights.pth").touch()            # changed since the hash: sniff applies
    report = chk.check(models_dir)
    assert not report.ok and "odd/weights.pth: not a torch zip file" in report.message()


def hand_filled(models_dir: Path, truncate: bool) -> Path:
    root = models_dir / "Hand-Diffusers"
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text('{"transformer": ["diffusers", "WanTransformer3DModel"]}')
    (root / "transformer" / "config.json").write_text("{}")
    dit = root / "transformer" / "diffusion_pytorch_model.safetensors"
    data = tiny_safetensors(2000)
    dit.write_bytes(data[:-1000] if truncate else data)
    return dit


def test_check_and_verify_on_a_hand_filled_set_with_truncated_dit(models_dir):
    dit = hand_filled(models_dir, truncate=True)
    res = cli("check", "--models-dir", str(models_dir))
    assert res.returncode == 1 and "volume ready" not in res.stdout
    assert "transformer/diffusion_pytorch_model.safetensors" in res.stdout
    assert "truncated" in res.stdout
    ver = cli("verify", "--models-dir", str(models_dir))
    no_traceback(ver)
    assert ver.returncode == 1 and "nothing pre-loaded" not in ver.stdout
    assert "NOT HASHED Hand-Diffusers" in ver.stdout and "truncated" in ver.stdout
    assert "fix: fetch it again" in ver.stdout and "preload --profile" in ver.stdout
    dit.write_bytes(tiny_safetensors(2000))
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0


@pytest.mark.parametrize("cmd", ["status", "check", "verify", "adopt"])
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bad_models_dir_is_named(tmp_path, cmd, kind):
    target = tmp_path / "nowhere"
    if kind == "file":
        target.write_text("x")
    res = cli(cmd, "--models-dir", str(target))
    no_traceback(res)
    assert res.returncode == 2
    what = "does not exist" if kind == "missing" else "is a file, not a folder"
    assert f"the models dir {what}" in res.stderr and str(target) in res.stderr
    assert "nothing pre-loaded" not in res.stdout + res.stderr


@pytest.mark.parametrize("args", [["verify", "--workers", "-1"], ["verify", "--workers", "abc"],
                                  ["verify", "--workers", "0"], ["preload", "--profile", "x"],
                                  ["preload", "--repo", "acme/tiny", "--workers", "-3"],
                                  ["check", "--profile", "nope"], ["frobnicate"]])
def test_bad_arguments_are_usage_errors(models_dir, args):
    res = cli(*args, "--models-dir", str(models_dir)) if args[0] != "frobnicate" else cli(*args)
    no_traceback(res)
    assert res.returncode == 2 and "error" in res.stderr


def test_hf_hub_offline_is_named(models_dir):
    res = cli("preload", "--profile", "kissing-lora", "--models-dir", str(models_dir), "-q",
              env={"HF_HUB_OFFLINE": "1"})
    no_traceback(res)
    assert res.returncode == 3 and "HF_HUB_OFFLINE" in res.stderr and "unset" in res.stderr
    for cmd in ("status", "check", "verify", "adopt"):
        no_traceback(cli(cmd, "--models-dir", str(models_dir), env={"HF_HUB_OFFLINE": "1"}))


def test_status_json_of_a_fresh_dir(models_dir):
    res = cli("status", "--json", "--models-dir", str(models_dir))
    assert res.returncode == 1 and json.loads(res.stdout)["exists"] is True


def test_preload_rehashes_a_file_changed_since_and_fetches_it_again(hub, models_dir):
    first = run(models_dir)
    target = models_dir / "tiny" / "model.safetensors"
    good = target.read_bytes()
    with open(target, "r+b") as fh:                      # same size, one byte changed in place
        fh.seek(len(good) - 3)
        fh.write(bytes([good[-3] ^ 1]))
    again = run(models_dir)
    actions = {r.relpath: r.action for r in again.results}
    assert actions["tiny/model.safetensors"] == "fetched" and target.read_bytes() == good
    assert actions["tiny/config.json"] == "kept" and first.results


def test_verify_on_a_hand_filled_volume_says_nothing_was_verified(models_dir):
    hand_filled(models_dir, truncate=False)
    res = cli("verify", "--models-dir", str(models_dir))
    no_traceback(res)
    assert res.returncode == 6, res.stdout + res.stderr
    assert "NOT HASHED Hand-Diffusers" in res.stdout and "header check OK" in res.stdout
    assert "NOT VERIFIED: 1 set(s) have no recorded hash (filled by hand" in res.stdout
    assert "python wanvolume.py preload --profile" in res.stdout
    assert "python wanvolume.py adopt NAME" in res.stdout
    assert cli("check", "--models-dir", str(models_dir)).returncode == 0   # the headers are sound


def test_adopt_with_nothing_to_adopt_exits_1(models_dir):
    hand_filled(models_dir, truncate=False)   # a set, but no hf download --local-dir folder
    res = cli("adopt", "--models-dir", str(models_dir))
    no_traceback(res)
    assert res.returncode == 1
    assert "nothing to adopt" in res.stdout


def test_the_exit_codes_in_help_are_the_ones_in_the_docs():
    """docs/volume.md's table and `--help` name the same codes, 0 to 6."""
    import re
    from volume_fixtures import ROOT
    text = (ROOT / "docs" / "volume.md").read_text()
    table = text[text.index("Exit codes (also in"):]
    documented = re.findall(r"^\| (\d) \|", table[:table.index("\n\n", table.index("| code"))], re.M)
    helped = re.findall(r"^  (\d)  ", cli("--help").stdout, re.M)
    assert documented == helped == [str(i) for i in range(7)]
