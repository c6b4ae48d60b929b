"""`status` and `check` see ComfyUI's own models/ folders (COMFYUI_DIR, or the tree the pack sits in),
as the loader does: a user whose sets are in ComfyUI/models/diffusers and ComfyUI/models/loras is ready."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from volume_fixtures import cli

from wan_engine import tiny_model
from wan_engine.store import comfy_dirs


def _tree(root: Path, template: Path) -> Path:
    comfy = root / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    shutil.copytree(template / tiny_model.TINY_SET_NAME, comfy / "models" / "diffusers" / tiny_model.TINY_SET_NAME)
    shutil.copy(template / "loras" / "tiny_kissing_style_lora.safetensors", comfy / "models" / "loras")
    return comfy


def test_status_and_check_see_comfyuis_models(tmp_path, tiny_volume_template):
    comfy = _tree(tmp_path, tiny_volume_template)
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {"COMFYUI_DIR": str(comfy), "WAN_VOLUME_MODELS_DIR": str(volume), "MODEL_CACHE_DIR": ""}
    st = cli("status", "--models-dir", str(volume), "--json", env=env)
    assert st.returncode == 0, st.stdout + st.stderr
    doc = json.loads(st.stdout)
    assert doc["ready"] and doc["comfyui"]["dir"] == str(comfy)
    assert [(s["name"], s["complete"]) for s in doc["comfyui"]["model_sets"]] == [(tiny_model.TINY_SET_NAME, True)]
    assert [lf["name"] for lf in doc["comfyui"]["loras"]] == ["loras/tiny_kissing_style_lora.safetensors"]
    text = cli("status", "--models-dir", str(volume), env=env).stdout
    assert f"ComfyUI's models folders ({comfy}/models)" in text and tiny_model.TINY_SET_NAME in text
    chk = cli("check", "--models-dir", str(volume), env=env)
    assert chk.returncode == 0, chk.stdout
    assert f"{tiny_model.TINY_SET_NAME} (ComfyUI's models: {comfy}/models)" in chk.stdout
    other = {**env, "COMFYUI_DIR": str(tmp_path / "no-comfyui")}   # the same volume, no ComfyUI: not ready
    assert cli("status", "--models-dir", str(volume), env=other).returncode == 1
    assert cli("check", "--models-dir", str(volume), env=other).returncode == 1


def test_a_truncated_file_in_comfyuis_folders_is_named(tmp_path, tiny_volume_template):
    comfy = _tree(tmp_path, tiny_volume_template)
    dit = next((comfy / "models" / "diffusers").rglob("transformer/*.safetensors"))
    dit.write_bytes(dit.read_bytes()[:-100])
    volume = tmp_path / "volume"
    volume.mkdir()
    chk = cli("check", "--models-dir", str(volume), env={"COMFYUI_DIR": str(comfy)})
    assert chk.returncode == 1 and f"{dit}:" in chk.stdout and "truncated" in chk.stdout


def test_the_tree_the_pack_sits_in(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    pack = comfy / "custom_nodes" / "ComfyUI-WanVolume"
    pack.mkdir(parents=True)
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    assert comfy_dirs.comfyui_dir(pack) is None   # no main.py: not a ComfyUI
    (comfy / "main.py").write_text("")
    assert comfy_dirs.comfyui_dir(pack) == comfy
    assert comfy_dirs.comfyui_dir(tmp_path / "elsewhere") is None
    monkeypatch.setenv("COMFYUI_DIR", str(comfy))
    assert comfy_dirs.comfyui_dir(tmp_path / "elsewhere") == comfy
    kinds = comfy_dirs.search_dirs(comfy).kinds()
    assert kinds["diffusion_models"] == [comfy / "models" / "diffusion_models", comfy / "models" / "unet"]
