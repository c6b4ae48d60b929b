"""Through a real ComfyUI server: the LoRA node's match report reaches the client.

A partial LoRA (all of the tiny model's layers plus two that do not exist) reports its counts in the
``executed`` websocket message and in /history; a LoRA that matches nothing (SDXL keys) fails the
prompt with an error naming the file and what it looks made for, and the server keeps working.
"""
from __future__ import annotations

import asyncio
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from helpers import API_WORKFLOWS, REPO, node_id, tiny_workflow
from wan_engine import tiny_model

pytestmark = pytest.mark.server

# Unique names, removed again after the module: other tests list the shared volume's LoRAs.
PARTIAL = "loras/zz_report_test_partial_lora.safetensors"
SDXL = "loras/zz_report_test_sdxl_lora.safetensors"
UI_KEY = "wanvolume_lora"      # what web/js/lora_report.js reads from the node output
BOGUS = ("blocks.99.self_attn.q", "blocks.99.ffn.0")


def partial_lora() -> tuple[dict[str, torch.Tensor], int]:
    """The tiny model's LoRA plus modules for layers it lacks; returns (weights, modules that fit)."""
    sd = tiny_model.make_wan_style_lora(seed=11)
    fitting = sum(k.endswith(".lora_A.weight") for k in sd)
    dim = tiny_model.TRANSFORMER_CONFIG["num_attention_heads"] * tiny_model.TRANSFORMER_CONFIG["attention_head_dim"]
    for layer in BOGUS:
        sd[f"diffusion_model.{layer}.lora_A.weight"] = torch.randn(4, dim)
        sd[f"diffusion_model.{layer}.lora_B.weight"] = torch.randn(dim, 4)
    return sd, fitting


def sdxl_lora() -> dict[str, torch.Tensor]:
    return {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(320, 4),
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(4.0)}


@pytest.fixture(scope="module")
def report_loras(tiny_volume):
    """Writes the two test LoRAs into the volume for this module; yields the partial one's fit count."""
    sd, fitting = partial_lora()
    paths = [tiny_volume / PARTIAL, tiny_volume / SDXL]
    save_file(sd, str(paths[0]))
    save_file(sdxl_lora(), str(paths[1]))
    yield fitting
    for p in paths:
        p.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def image_name(comfy_server) -> str:
    return comfy_server.upload_image(REPO / "assets" / "two_people.png")


def workflow(image_name: str, lora: str) -> dict:
    wf = tiny_workflow(API_WORKFLOWS[0], image_name)
    wf[node_id(wf, "WanVolumeLoraApply")]["inputs"]["lora"] = lora
    return wf


async def _run_listening(server, wf: dict, timeout: float) -> tuple[str, list[dict]]:
    """Queue ``wf`` with a websocket open as the frontend has it; the JSON messages until it ends."""
    import aiohttp

    ws_url = server.url.replace("http", "ws", 1) + f"/ws?clientId={server.client_id}"
    messages: list[dict] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        status, body = await asyncio.to_thread(server.queue, wf)
        assert status == 200, body
        prompt_id = body["prompt_id"]
        async with asyncio.timeout(timeout):
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue            # binary previews
                data = json.loads(msg.data)
                messages.append(data)
                if data["type"] in ("execution_success", "execution_error") and \
                        data["data"].get("prompt_id") == prompt_id:
                    break
    return prompt_id, messages


def run_listening(server, wf: dict, timeout: float = 600.0) -> tuple[dict, list[dict]]:
    """(the /history entry, the websocket messages) of one prompt."""
    prompt_id, messages = asyncio.run(_run_listening(server, wf, timeout))
    return server.wait(prompt_id), messages


def executed_ui(messages: list[dict], node: str) -> dict | None:
    outs = [m["data"]["output"] for m in messages if m["type"] == "executed" and m["data"]["node"] == node]
    return outs[-1] if outs else None


def test_partial_match_report_reaches_the_client(comfy_server, image_name, report_loras):
    wf = workflow(image_name, PARTIAL)
    lora_node = node_id(wf, "WanVolumeLoraApply")
    entry, messages = run_listening(comfy_server, wf)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    expected = {"lora": PARTIAL, "status": "partial", "matched": report_loras,
                "total": report_loras + len(BOGUS), "unmatched": len(BOGUS), "skipped": 0}
    # What the editor gets: the executed message that calls node.onExecuted (web/js/lora_report.js) ...
    ui = executed_ui(messages, lora_node)
    assert ui is not None, f"no executed message for the LoRA node: {[m['type'] for m in messages]}"
    (report,) = ui[UI_KEY]
    assert {k: report[k] for k in expected} == expected
    assert report["lora_format"].startswith("Wan ")
    assert f"{report_loras}/{report_loras + 2} LoRA layers matched" in report["summary"]
    assert "blocks.99." in report["summary"]            # names what did not match
    # ... and the history the queue panel reads.
    assert entry["outputs"][lora_node][UI_KEY] == ui[UI_KEY]
    # The file's keys are not mistaken for media by the queue panel (no filename/type/format).
    assert not {"filename", "type", "format"} & set(report)
    # One warning in the server log for it (the engine's; the node adds none).
    def warnings() -> int:
        log = comfy_server.log_path.read_text(errors="replace")
        return len(re.findall(rf"LoRA {re.escape(PARTIAL.split('/')[1])} matches the model only partly", log))
    assert warnings() == 1

    # Re-run with another seed: ComfyUI reuses the node's cached output and sends no executed
    # message for it, so the editor keeps the report it has (lora_report.js stores it on the node);
    # no second warning either.
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["seed"] = 4321
    entry, messages = run_listening(comfy_server, wf)
    assert entry["status"]["status_str"] == "success"
    (cached,) = [m["data"]["nodes"] for m in messages if m["type"] == "execution_cached"]
    assert lora_node in cached and executed_ui(messages, lora_node) is None
    assert warnings() == 1


def test_zero_match_is_an_execution_error_and_server_keeps_serving(comfy_server, image_name, report_loras):
    wf = workflow(image_name, SDXL)
    lora_node = node_id(wf, "WanVolumeLoraApply")
    entry, messages = run_listening(comfy_server, wf)
    assert entry["status"]["status_str"] == "error"
    (error,) = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert error["node_id"] == lora_node and error["exception_type"].endswith("LoraMismatch")
    text = error["exception_message"]
    assert "zz_report_test_sdxl_lora.safetensors" in text and "SDXL" in text and "Fix:" in text
    assert executed_ui(messages, lora_node) is None and lora_node not in entry.get("outputs", {})

    # Still serving: the kissing LoRA runs next and reports a full match.
    ok = tiny_workflow(API_WORKFLOWS[0], image_name)
    entry, messages = run_listening(comfy_server, ok)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    (report,) = executed_ui(messages, lora_node)[UI_KEY]
    assert report["status"] == "full" and report["matched"] == report["total"] > 0
