"""status: the JSON document, the CLI, and the ComfyUI routes (with a stand-in PromptServer)."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import types
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fake_hub import tiny_safetensors
from volume_fixtures import cli, fast_policy, hub, models_dir  # noqa: F401

from wan_engine.store import preload as pl
from wan_engine.store import profiles
from wan_engine.store.status import volume_status
from wan_engine.store.verify import verify

DIFFUSERS = {"model_index.json": json.dumps({"_class_name": "WanImageToVideoPipeline",
                                             "transformer": ["diffusers", "WanTransformer3DModel"],
                                             "vae": ["diffusers", "AutoencoderKLWan"]}).encode(),
             "transformer/config.json": b"{}",
             "transformer/diffusion_pytorch_model.safetensors": tiny_safetensors(100, key="patch_embedding.weight"),
             "vae/config.json": b"{}",
             "vae/diffusion_pytorch_model.safetensors": tiny_safetensors(50)}


def _fill(hub, models_dir: Path) -> None:
    hub.add_repo("Wan-AI/Tiny-Diffusers", DIFFUSERS)
    hub.add_repo(profiles.LORA_REPO, {"kissing_30_epochs.safetensors":
                                      tiny_safetensors(64, key="diffusion_model.blocks.0.self_attn.q.lora_A.weight"),
                                      "README.md": b"card"})
    for name, sources in (("Tiny-Diffusers", (profiles.repo_source("Wan-AI/Tiny-Diffusers"),)),
                          ("kissing-lora", profiles.get_profile("kissing-lora").sources)):
        pl.preload(name, sources, models_dir, policy=fast_policy(), show_progress=False)


def test_status_document_lists_sets_loras_profiles(hub, models_dir):
    _fill(hub, models_dir)
    doc = volume_status(models_dir)
    assert doc["models_dir"] == str(models_dir) and doc["ready"] is True
    (s,) = doc["model_sets"]
    assert (s["name"], s["layout"], s["complete"], s["missing"]) == ("Tiny-Diffusers", "diffusers", True, [])
    # the preload hashed every file and recorded size + mtime: verified until a file changes
    assert s["verified"] is True and s["integrity"] == "verified" and s["size_bytes"] > 0
    assert [lf["name"] for lf in doc["loras"]] == ["kissing-lora/kissing_30_epochs.safetensors"]
    assert not (models_dir / "kissing-lora" / "README.md").exists()   # only *.safetensors
    by_name = {p["name"]: p for p in doc["profiles"]}
    assert by_name["kissing-lora"]["ready"] and by_name["kissing-lora"]["command"] == ""
    assert not by_name["comfy-720p-bf16"]["ready"]
    assert by_name["comfy-720p-bf16"]["command"].endswith(
        f"preload --profile comfy-720p-bf16 --models-dir {models_dir}")
    assert {p["name"] for p in doc["preloaded"]} == {"Tiny-Diffusers", "kissing-lora"}
    verify(models_dir, show_progress=False)
    doc = volume_status(models_dir)
    assert doc["model_sets"][0]["verified"] is True
    assert all(p["verified"] for p in doc["preloaded"])


def test_status_incomplete_set_and_fetch_command(hub, models_dir):
    _fill(hub, models_dir)
    (models_dir / "Tiny-Diffusers" / "vae" / "config.json").unlink()
    (models_dir / "kissing-lora" / "kissing_30_epochs.safetensors").unlink()
    doc = volume_status(models_dir)
    assert doc["model_sets"][0]["complete"] is False
    assert doc["model_sets"][0]["missing"] == ["vae"]
    assert doc["ready"] is False
    assert "preload --profile kissing-lora" in doc["command"]
    pre = {p["name"]: p for p in doc["preloaded"]}
    assert not pre["Tiny-Diffusers"]["ready"]
    assert any("vae/config.json: missing" in p for p in pre["Tiny-Diffusers"]["problems"])


def test_status_cli_json_and_text(hub, models_dir):
    _fill(hub, models_dir)
    res = cli("status", "--json", "--models-dir", str(models_dir))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ready"] is True
    text = cli("status", "--models-dir", str(models_dir))
    assert "Tiny-Diffusers" in text.stdout and "kissing_30_epochs" in text.stdout


def test_status_of_empty_volume_is_not_ready(tmp_path):
    doc = volume_status(tmp_path / "absent")
    assert doc["exists"] is False and doc["ready"] is False
    assert "preload --profile comfy-720p-bf16" in doc["command"]


def _fake_comfy_server(monkeypatch) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=routes))
    monkeypatch.setitem(sys.modules, "server", server)
    return routes


async def _call(routes: web.RouteTableDef, method: str, url: str, **kw):
    app = web.Application()
    app.add_routes(routes)
    async with TestClient(TestServer(app)) as client:
        resp = await client.request(method, url, **kw)
        return resp.status, await resp.json()


def test_routes_setup_logs_one_line_and_serves_status(hub, models_dir, monkeypatch, caplog):
    from pack import pack_module

    r = pack_module("nodes.routes")
    _fill(hub, models_dir)
    table = _fake_comfy_server(monkeypatch)
    monkeypatch.setattr(r, "_done", False)
    with caplog.at_level(logging.INFO, logger="comfyui_wanvolume.nodes.routes"):
        r.setup()
        r.setup()                                    # safe to call again: no double routes
    lines = [m for m in caplog.messages if m.startswith("WanVolume:")]
    assert len(lines) == 1 and str(models_dir) in lines[0] and "ready" in lines[0]
    assert len(list(table)) == 3
    status, doc = asyncio.run(_call(table, "GET", "/wan_volume/status"))
    assert status == 200 and doc["ready"] is True and doc["models_dir"] == str(models_dir)


def test_preload_route_is_off_by_default_and_takes_only_known_profiles(hub, models_dir, monkeypatch):
    from pack import pack_module

    r = pack_module("nodes.routes")
    table = web.RouteTableDef()
    r.register(table)
    monkeypatch.delenv(r.ENV_ALLOW_PRELOAD, raising=False)
    status, body = asyncio.run(_call(table, "POST", "/wan_volume/preload", json={"profile": "kissing-lora"}))
    assert status == 403 and r.ENV_ALLOW_PRELOAD in body["error"]
    monkeypatch.setenv(r.ENV_ALLOW_PRELOAD, "1")
    status, body = asyncio.run(_call(table, "POST", "/wan_volume/preload", json={"profile": "../../etc"}))
    assert status == 400 and "kissing-lora" in body["error"]
    assert not any(models_dir.iterdir())


def test_preload_route_runs_in_background(hub, models_dir, monkeypatch):
    import time
    from pack import pack_module

    r = pack_module("nodes.routes")
    hub.add_repo(profiles.LORA_REPO, {"kissing_30_epochs.safetensors": tiny_safetensors(64, key="x.lora_A.weight")})
    table = web.RouteTableDef()
    r.register(table)
    monkeypatch.setenv(r.ENV_ALLOW_PRELOAD, "1")
    status, body = asyncio.run(_call(table, "POST", "/wan_volume/preload", json={"profile": "kissing-lora"}))
    assert status == 202 and body["job"]["state"] == "running"
    for _ in range(200):
        _, jobs = asyncio.run(_call(table, "GET", "/wan_volume/preload"))
        if jobs["jobs"]["kissing-lora"]["state"] != "running":
            break
        time.sleep(0.05)
    assert jobs["jobs"]["kissing-lora"] == {"profile": "kissing-lora", "state": "done", "error": None}
    assert (models_dir / "kissing-lora" / "kissing_30_epochs.safetensors").is_file()


def test_status_cli_models_dir_finds_lora_repo_folders(hub, models_dir, monkeypatch):
    _fill(hub, models_dir)
    monkeypatch.delenv("WAN_VOLUME_MODELS_DIR")
    doc = json.loads(cli("status", "--json", "--models-dir", str(models_dir)).stdout)
    assert [lf["name"] for lf in doc["loras"]] == ["kissing-lora/kissing_30_epochs.safetensors"]
