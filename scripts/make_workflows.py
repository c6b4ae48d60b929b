"""Write the shipped workflows: UI format (workflows/*.json) and API format (workflows/api/*.json).

One spec per resolution; the UI and API files are written from it. tests/test_workflows.py proves
the two describe the same graph and values by converting the UI file with the live server's
/object_info, and the browser test compares with what the real frontend queues.
Run: .venv/bin/python scripts/make_workflows.py
"""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from wan_engine.store import auto_set  # noqa: E402  (the loader's automatic model_set values)

TRIGGER = "k144ing kissing"
PROMPT = ("Two people stand close together, facing each other in warm evening light. They smile, "
          f"lean in slowly and close their eyes, then they engage in {TRIGGER}.")
NEGATIVE = None   # filled from the engine so the workflows use Wan's usual negative prompt
KISSING_LORA = "kissing-lora/kissing_30_epochs.safetensors"
# properties.models: the frontend (1.32.x) checks an entry only when its name equals a widget value,
# and only in ComfyUI's own folders; web/js/missing_models.js hides the entries the pack resolves
# on the volume and the loader's folder entry (the loader badge reports a missing set instead).
LORA_URL = "https://huggingface.co/Remade-AI/kissing/resolve/main/kissing_30_epochs.safetensors"
NOTE = (
    "Kissing LoRA (Remade-AI/kissing), trained on the Wan2.1 I2V 480P base.\n\n"
    f"Trigger phrase: end the prompt with '... then they engage in {TRIGGER}.'\n"
    "Card settings: LoRA strength 1.0, guidance (cfg) 6.0, 16 fps; flow shift 5.0 at 720P, 3.0 at 480P.\n\n"
    "Files on the volume (RunPod: /workspace/models or /runpod-volume/models):\n"
    "  python wanvolume.py preload --profile {profile}\n"
    "  python wanvolume.py preload --profile kissing-lora\n"
    "(or the ~90 GB diffusers set: --profile {diffusers}). The loader's model_set '{model_set}' "
    "picks the best complete set of that kind on the volume (docs/volume.md); pick a set by name to "
    "fix it. The WanVolume tab in the left sidebar (or 'python "
    "wanvolume.py status') shows what is there; the badge on the loader turns green.\n\n"
    "The video plays in Video Combine and is saved to output/WanVolume/; drop the MP4 on the "
    "canvas to get this graph back.")

FAST_NOTE = (
    "FAST: 4 steps, cfg 1 (one DiT evaluation per step), Euler on lightx2v's distill schedule "
    "(sigmas 1, 0.9375, 0.8333, 0.625). About 20x fewer DiT evaluations than the full workflow "
    "(4 instead of 80).\n\n"
    "Use fast for drafts, batches and cost: the kissing LoRA rides on lightx2v's step/CFG-distill LoRA. "
    "Use the full workflow (40 steps, cfg 6) for the best motion and detail, or when the fast result "
    "looks over-smoothed or ignores the prompt; the negative prompt has no effect at cfg 1.\n\n"
    "Distill LoRA: python wanvolume.py preload --profile {distill_profile}\n"
    "(480P-trained ranks 32-256 from Kijai's mirror: --profile distill-lora-480p-rank64.)\n\n")
FULL = dict(steps=40, cfg=6.0, sampler="unipc", schedule="auto")
FAST = dict(steps=4, cfg=1.0, shift=5.0, sampler="euler", schedule="distill_4step")
PRESETS = {
    "kiss_i2v_720p": dict(model_set=auto_set.VALUES[0], width=1280, height=720, shift=5.0,
                          profile="comfy-720p-bf16", diffusers="wan21-i2v-720p-diffusers",
                          image="two_people.png", **FULL),
    "kiss_i2v_480p": dict(model_set=auto_set.VALUES[1], width=832, height=480, shift=3.0,
                          profile="comfy-480p-bf16", diffusers="wan21-i2v-480p-diffusers",
                          image="two_people.png", **FULL),
}
for _res in ("720p", "480p"):
    PRESETS[f"kiss_i2v_{_res}_fast"] = dict(PRESETS[f"kiss_i2v_{_res}"], **FAST, distill=_res)
# Wan2.2 I2V A14B: Wan's config (boundary 0.9, shift 5, 40 steps, guidance 3.5 for both experts) and
# Lightning (4 steps, cfg 1, Euler at shift 5: t = 1000, 937.5 | 833, 625, two steps per expert)
WAN22 = dict(model_set=auto_set.VALUES[2], width=1280, height=720, shift=5.0, boundary=0.9,
             profile="wan22-comfy-fp16", image="two_people.png", wan22=True)
PRESETS["wan22_kiss_i2v_720p"] = dict(WAN22, steps=40, cfg=3.5, cfg_low_noise=3.5, sampler="unipc", schedule="auto")
PRESETS["wan22_kiss_i2v_720p_fast"] = dict(WAN22, steps=4, cfg=1.0, cfg_low_noise=1.0, sampler="euler",
                                           schedule="auto", lightning=True)
WAN22_NOTE = (
    "Wan2.2 I2V A14B (two experts): the high-noise expert runs while t >= boundary x 1000 (0.9, Wan's "
    "value), the low-noise expert after; cfg is the high expert's guidance, cfg_low_noise the low "
    "one's. The kissing LoRA (trained on Wan2.1) goes on both experts (expert: both); its CLIP-branch "
    "layers have no target in Wan2.2 and are reported as such.\n\n"
    "{mode}"
    "Files: python wanvolume.py preload --profile {profile}\n"
    "  (or 35.5 GB in fp8: --profile wan22-comfy-fp8; or the diffusers set: --profile "
    "wan22-i2v-a14b-diffusers). The loader's model_set '{model_set}' picks the best complete "
    "Wan2.2 set on the volume (docs/volume.md).\n"
    "{lightning}"
    "  python wanvolume.py preload --profile kissing-lora\n\n"
    f"Trigger phrase: end the prompt with '... then they engage in {TRIGGER}.'\n"
    "Where both experts do not fit the GPU, one is on it at a time, swapped at the boundary (both kept "
    "in RAM).")
WAN22_FAST = ("FAST (Lightning): 4 steps, cfg 1 on both experts, Euler at shift 5, two steps per expert; "
              "lightx2v's Lightning LoRAs, high_noise_model on the high expert and low_noise_model on "
              "the low one. Use the quality workflow (40 steps, guidance 3.5) for the best motion.\n\n")
WAN22_QUALITY = "QUALITY: Wan's I2V config: 40 UniPC steps, guidance 3.5 for both experts, shift 5.\n\n"


def distill_node(res: str) -> dict:
    """The distill LoRA node (id 7), between the loader and the kissing LoRA."""
    from wan_engine.store.profiles import DISTILL_FILE, DISTILL_REPO, distill_lora_name

    name = distill_lora_name(res)
    url = f"https://huggingface.co/{DISTILL_REPO.format(res=res.upper())}/resolve/main/{DISTILL_FILE}"
    return dict(id=7, type="WanVolumeLoraApply", title=f"Distill LoRA (lightx2v, 4 steps, {res})",
                pos=[440, -320], size=[360, 130], widgets={"lora": name, "strength": 1.0, "fuse_lora": False, "expert": "both"},
                links={"pipe": (2, 0, "WANVOLUME_PIPE")}, outputs=[("pipe", "WANVOLUME_PIPE")],
                models=[{"name": name, "url": url, "directory": "loras"}])


def graph(p: dict) -> list[dict]:
    """Nodes as (id, type, title, widgets in schema order, links in, control values)."""
    from wan_engine.sample.sampling import WAN_NEGATIVE_PROMPT

    nodes = [
        dict(id=1, type="LoadImage", title="Photo of two people", pos=[40, 520], size=[320, 360],
             widgets={"image": p["image"]}, ui_extra=["image"], links={},
             outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")]),
        dict(id=2, type="WanVolumeModelLoader", title="Wan2.1 I2V Loader (volume)", pos=[40, 80],
             size=[360, 250], widgets={"model_set": p["model_set"], "precision": "bf16", "offload": "auto",
                      "fp8_storage": False, "text_encoder": "auto", "clip_vision": "auto", "vae": "auto"},
             links={}, outputs=[("pipe", "WANVOLUME_PIPE")]),   # auto: no file to name (the badge tells)
        dict(id=3, type="WanVolumeLoraApply", title="Kissing LoRA", pos=[440, 80], size=[360, 130],
             widgets={"lora": KISSING_LORA, "strength": 1.0, "fuse_lora": False, "expert": "both"},
             links={"pipe": (7 if p.get("distill") else 2, 0, "WANVOLUME_PIPE")},
             outputs=[("pipe", "WANVOLUME_PIPE")],
             models=[{"name": KISSING_LORA, "url": LORA_URL, "directory": "loras"}]),
        dict(id=4, type="WanVolumeSampler", title="Wan2.1 I2V Sampler (volume)", pos=[440, 440],
             size=[420, 720],
             widgets={"prompt": PROMPT, "negative_prompt": WAN_NEGATIVE_PROMPT, "width": p["width"],
                      "height": p["height"], "frames": 81, "steps": p["steps"], "cfg": p["cfg"],
                      "shift": p["shift"], "seed": 42, "tiled_decode": True, "tile_size": 256,
                      "tile_overlap": 64, "sampler": p["sampler"], "schedule": p["schedule"], "fit": "crop",
                      "boundary": 0.0, "cfg_low_noise": 0.0},     # Wan2.2 sets only: 0 = unused
             control={"seed": "randomize"},
             links={"pipe": (3, 0, "WANVOLUME_PIPE"), "image": (1, 0, "IMAGE")},
             outputs=[("frames", "IMAGE")]),
        dict(id=5, type="WanVolumeVideoCombine", title="Video Combine (WanVolume)", pos=[900, 80],
             size=[420, 640],
             widgets={"fps": 16.0, "format": "h264-mp4", "crf": 19, "filename_prefix": "WanVolume/kiss",
                      "save_output": True, "embed_workflow": True},
             links={"images": (4, 0, "IMAGE")}, outputs=[("filename", "STRING")]),
    ]
    if p.get("distill"):
        nodes.insert(2, distill_node(p["distill"]))
    if p.get("wan22"):
        nodes[1]["title"] = "Wan2.2 I2V A14B Loader (volume)"
        nodes[3]["title"] = "Wan2.2 I2V Sampler (two experts, volume)"
        nodes[3]["widgets"].update(boundary=p["boundary"], cfg_low_noise=p["cfg_low_noise"])
    if p.get("lightning"):
        nodes[2]["links"]["pipe"] = (8, 0, "WANVOLUME_PIPE")
        nodes[2:2] = lightning_nodes()
    return nodes


def lightning_nodes() -> list[dict]:
    """Lightning high (id 7, high expert) then low (id 8, low expert), before the kissing LoRA."""
    from wan_engine.store.profiles import LIGHTNING_DIR, LIGHTNING_REPO, lightning_lora_name

    out = []
    for node_id, role, src in ((7, "high", 2), (8, "low", 7)):
        name = lightning_lora_name(role)
        url = f"https://huggingface.co/{LIGHTNING_REPO}/resolve/main/{LIGHTNING_DIR}/{role}_noise_model.safetensors"
        out.append(dict(id=node_id, type="WanVolumeLoraApply", title=f"Lightning LoRA, {role}-noise expert",
                        pos=[440 + 380 * (role == "low"), -320], size=[360, 150],
                        widgets={"lora": name, "strength": 1.0, "fuse_lora": False, "expert": role},
                        links={"pipe": (src, 0, "WANVOLUME_PIPE")}, outputs=[("pipe", "WANVOLUME_PIPE")],
                        models=[{"name": name, "url": url, "directory": "loras"}]))
    return out


def to_api(nodes: list[dict]) -> dict:
    api = {}
    for n in nodes:
        inputs = dict(n["widgets"])
        inputs.update({k: [str(src), slot] for k, (src, slot, _) in n["links"].items()})
        api[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n["title"]}}
    return api


def to_ui(nodes: list[dict], note: str) -> dict:
    links, ui_nodes, link_id = [], [], 0
    out_links: dict[tuple[int, int], list[int]] = {}
    inputs_of: dict[int, list[dict]] = {}
    for n in nodes:
        ins = []
        for name, (src, slot, typ) in n["links"].items():
            link_id += 1
            links.append([link_id, src, slot, n["id"], len(ins), typ])
            out_links.setdefault((src, slot), []).append(link_id)
            ins.append({"name": name, "type": typ, "link": link_id})
        inputs_of[n["id"]] = ins
    for order, n in enumerate(nodes):
        values = []
        for name, value in n["widgets"].items():
            values.append(value)
            if name in n.get("control", {}):
                values.append(n["control"][name])
        values += n.get("ui_extra", [])
        props = {"Node name for S&R": n["type"]}
        if n.get("models"):
            props["models"] = n["models"]
        ui_nodes.append({
            "id": n["id"], "type": n["type"], "title": n["title"], "pos": n["pos"], "size": n["size"],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs_of[n["id"]],
            "outputs": [{"name": name, "type": typ, "slot_index": i,
                         "links": out_links.get((n["id"], i), [])}
                        for i, (name, typ) in enumerate(n["outputs"])],
            "properties": props, "widgets_values": values})
    ui_nodes.append({"id": 6, "type": "Note", "title": "Read me: trigger phrase and files",
                     "pos": [40, 920], "size": [400, 290 + 160 * ("FAST" in note)], "flags": {}, "order": len(nodes), "mode": 0,
                     "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note],
                     "color": "#432", "bgcolor": "#653"})
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, note)), "revision": 0,
            "last_node_id": max(6, *(n["id"] for n in nodes)),
            "last_link_id": link_id, "nodes": ui_nodes, "links": links, "groups": [], "config": {},
            # the view starts at the topmost node (the fast workflows' LoRAs sit above the loader)
            "extra": {"ds": {"scale": 0.75, "offset": [110, 170 - min(0, *(n["pos"][1] + 140 for n in nodes))]}},
            "version": 0.4}


def main() -> None:
    for name, preset in PRESETS.items():
        nodes = graph(preset)
        note = NOTE.format(profile=preset["profile"], diffusers=preset.get("diffusers"),
                           model_set=preset["model_set"])
        if preset.get("wan22"):
            note = WAN22_NOTE.format(
                mode=WAN22_FAST if preset.get("lightning") else WAN22_QUALITY, profile=preset["profile"],
                model_set=preset["model_set"],
                lightning="  python wanvolume.py preload --profile wan22-lightning-lora\n" if preset.get("lightning") else "")
        elif preset.get("distill"):
            note = FAST_NOTE.format(distill_profile=f"distill-lora-{preset['distill']}") + note
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(to_ui(nodes, note), indent=2) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(to_api(nodes), indent=2) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
