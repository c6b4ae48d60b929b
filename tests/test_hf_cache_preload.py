"""``preload --hf-cache DIR``: huggingface_hub's own layout, found by the pack and by from_pretrained's
own lookup (try_to_load_from_cache), resumed by a second run without fetching anything again."""
from __future__ import annotations

from pathlib import Path

from fake_hub import tiny_safetensors
from volume_fixtures import cli, hub, models_dir  # noqa: F401  (fixtures)
from wan_engine.store import find as volume, hf_cache
from wan_engine.tiny_model import ensure_demo_lora

LORA_FILE = "kissing_30_epochs.safetensors"


def test_preload_fills_a_hub_cache_the_pack_and_huggingface_hub_find(hub, models_dir, tmp_path, monkeypatch):
    lora = ensure_demo_lora(tmp_path / "src").read_bytes()
    hub.add_repo("Remade-AI/kissing", {LORA_FILE: lora, "README.md": b"# kissing\n",
                                        "other.bin": tiny_safetensors(10)})
    cache = tmp_path / "hub-cache"
    res = cli("preload", "--profile", "kissing-lora", "--hf-cache", str(cache), "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    folder = cache / "models--Remade-AI--kissing"
    commit = (folder / "refs" / "main").read_text()
    link = folder / "snapshots" / commit / LORA_FILE
    assert link.is_symlink() and link.read_bytes() == lora
    assert not (folder / "snapshots" / commit / "other.bin").exists(), "only the profile's files"
    assert f"Remade-AI/kissing@{commit[:12]}" in res.stdout and f"{hf_cache.ENV_CACHES}={cache}" in res.stdout
    assert not any(models_dir.iterdir()), "nothing goes to the models dir"

    from huggingface_hub import try_to_load_from_cache
    assert Path(try_to_load_from_cache("Remade-AI/kissing", LORA_FILE, cache_dir=str(cache))) == link

    monkeypatch.setenv(hf_cache.ENV_CACHES, str(cache))
    volume.clear_index()
    assert [(lf.name, lf.path) for lf in volume.find_loras()] == [(f"kissing-lora/{LORA_FILE}", link)]

    hub.reset_counts()
    again = cli("preload", "--profile", "kissing-lora", "--hf-cache", str(cache), "--quiet")
    assert again.returncode == 0 and hub.served() == 0, "a second run fetches nothing"


def test_unknown_repo_names_the_field_and_fix(hub, models_dir, tmp_path):
    res = cli("preload", "--repo", "nobody/nothing", "--hf-cache", str(tmp_path / "c"), "--quiet")
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    assert "--repo = " in res.stderr or "nobody/nothing" in res.stderr
