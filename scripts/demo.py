"""The main job: a real ComfyUI, headless, runs the shipped API workflow through /prompt.

Uses a real model set when the volume has one (WAN_VOLUME_MODELS_DIR, MODEL_CACHE_DIR,
/workspace/models, /runpod-volume/models); otherwise makes the tiny demo model set in
./demo_volume/models and runs the same workflow at a small size. Prints the MP4's path.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from comfy_headless import ComfyServer, outputs_of  # noqa: E402
from wan_engine.store import paths, find as volume
from wan_engine import report, tiny_model  # noqa: E402

log = logging.getLogger("demo")


def pick_real_set(resolution: str) -> volume.ModelSet | None:
    sets = [s for s in volume.find_model_sets() if s.complete and "tiny" not in s.name]
    sets.sort(key=lambda s: (resolution.upper() not in s.name.upper(), s.name))
    return sets[0] if sets else None


def build_prompt(args, image_name: str, real: volume.ModelSet | None) -> dict:
    wf = json.loads((REPO / "workflows" / "api" / f"kiss_i2v_{args.resolution}.json").read_text())
    ids = {n["class_type"]: k for k, n in wf.items()}
    wf[ids["LoadImage"]]["inputs"]["image"] = image_name
    sampler = wf[ids["WanVolumeSampler"]]["inputs"]
    lora = wf[ids["WanVolumeLoraApply"]]["inputs"]
    if real is None:
        wf[ids["WanVolumeModelLoader"]]["inputs"].update(model_set=tiny_model.TINY_SET_NAME)
        lora["lora"] = "loras/tiny_kissing_style_lora.safetensors"
        sampler.update(width=args.width or 128, height=args.height or 80, frames=args.frames or 17,
                       steps=args.steps or 4)
    else:
        wf[ids["WanVolumeModelLoader"]]["inputs"].update(model_set=real.name)
        loras = [lf.name for lf in volume.find_loras() if "kiss" in lf.name.lower()]
        if loras:
            lora["lora"] = loras[0]
        else:
            log.warning("no kissing LoRA on the volume: running without it "
                        "(fetch it with `python wanvolume.py preload --profile kissing-lora`)")
            sampler["pipe"] = lora["pipe"]
            del wf[ids["WanVolumeLoraApply"]]
        for key in ("width", "height", "frames", "steps"):
            if getattr(args, key):
                sampler[key] = getattr(args, key)
    sampler["seed"] = args.seed
    return wf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", choices=["720p", "480p"], default="480p")
    ap.add_argument("--image", type=Path, default=REPO / "assets" / "two_people.png")
    ap.add_argument("--work-dir", type=Path, default=REPO / "demo_volume")
    ap.add_argument("--tiny", action="store_true", help="use the tiny demo set even if a real one exists")
    ap.add_argument("--seed", type=int, default=42)
    for key in ("width", "height", "frames", "steps"):
        ap.add_argument(f"--{key}", type=int)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")

    real = None if args.tiny else pick_real_set(args.resolution)
    if real is None:
        models_dir = args.work_dir / "models"
        log.info("no real model set on the volume (searched %s): making the tiny demo set in %s",
                 volume.describe_search(paths.models_dirs()), models_dir)
        tiny_model.ensure_demo_set(models_dir)
        tiny_model.ensure_demo_lora(models_dir)
    else:
        models_dir = real.root.parent
        log.info("using model set %s from %s", real.name, models_dir)

    server = ComfyServer(args.work_dir / "comfy", models_dir)
    log.info("starting ComfyUI (log: %s)", server.log_path)
    server.start()
    try:
        image_name = server.upload_image(args.image)
        wf = build_prompt(args, image_name, real)
        start = time.perf_counter()
        entry = server.run(wf, timeout=6 * 3600)
        took = time.perf_counter() - start
        item = outputs_of(entry, next(k for k, n in wf.items() if n["class_type"] == "WanVolumeVideoCombine"))[0]
    finally:
        server.stop()
    out = server.base_dir / item["type"] / item["subfolder"] / item["filename"]
    log.info("prompt ran in %.1f s", took)
    run = report.report_path(out)   # what the video cost and where its seconds went
    if run.is_file():
        log.info("%s", report.summary(json.loads(run.read_text())))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
