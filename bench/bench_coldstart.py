"""A cold worker's first video on a throttled volume, against the time the storage allows.

The volume is an ext4 image on a loop device whose reads the kernel's block-I/O throttle
(cgroup v1 ``blkio.throttle.read_bps_device`` / ``read_iops_device``) holds to a set bandwidth
and request rate, like a RunPod network volume (~240 MB/s). It is unmounted and mounted again
before each run, so no page cache survives between runs. It holds one mid-size random-weight
Wan2.1 I2V set (diffusers layout, fp32 on disk) twice: as a plain models folder, and as a
Hugging Face cache that huggingface_hub's own ``snapshot_download`` wrote from the fake Hub.

Each run starts a real ComfyUI (CPU) and measures: seconds from ComfyUI's start and from the
first /prompt to the finished video, the same prompt again on the now warm worker, the bytes the
volume served (the device's own counter), and the read bound (the set's bytes / bandwidth).
Runs: plain folder with prefetch off, prefetch on, warm-up on; HF cache with prefetch off and
warm-up on; plain folder with warm-up and its rehearsal (WAN_VOLUME_WARMUP_RUN at the workflow's
size); and, as the baseline in the same run, the plain folder and the HF cache with the load's
read-ahead off (WAN_VOLUME_READAHEAD=off: the load reads alone, the HF cache's first-use hash
before it). The limit is per volume (every reader shares it); the throttle has no per-stream
limit. Needs root (losetup, mount, the blkio controller).

``--fuse STREAM,VOLUME,LATENCY`` (MB/s per open file, MB/s for the volume, ms per request; 0 is
unlimited) serves the set through tests/throttlefs.py instead: a FUSE passthrough of a local folder
with a per-stream limit too, like a network filesystem. It is mounted again before each run, and its
files bypass the page cache (direct_io), so every run reads cold; the bytes read are its counter.
Either way the table says how many readers each run's loads chose (wan_engine/load/readers.py).

Usage: .venv/bin/python bench/bench_coldstart.py [--mbps 240] [--iops 4000] [--dim 1024] [--layers 10]
       .venv/bin/python bench/bench_coldstart.py --fuse 100,400,2 [--dim 512] [--layers 4]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from comfy_headless import ComfyServer  # noqa: E402
from helpers import API_WORKFLOWS, node_id, tiny_workflow  # noqa: E402

SET = "Wan2.1-I2V-bench-Diffusers"
REPO = f"Wan-AI/{SET}"
BLKIO = Path("/sys/fs/cgroup/blkio")
MB = 10**6


# ---- the set -----------------------------------------------------------------------------

def write_set(dest: Path, dim: int, layers: int) -> Path:
    """The tiny model's components with a wider, deeper DiT (fp32 on disk)."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from wan_engine import tiny_model
    comps = tiny_model.build_components(seed=0)
    cfg = dict(tiny_model.TRANSFORMER_CONFIG, num_attention_heads=dim // 128, ffn_dim=dim * 4, added_kv_proj_dim=dim,
               num_layers=layers)
    comps["transformer"] = WanTransformer3DModel(**cfg)
    tiny_model._randomize_zero_inits(comps["transformer"])
    WanImageToVideoPipeline(**comps).save_pretrained(dest, safe_serialization=True)
    return dest


def hub_cache(plain: Path, cache: Path) -> None:
    """The same files as a Hugging Face cache, written by huggingface_hub from the fake Hub."""
    import hf_cache_fixtures as hc
    from fake_hub import FakeHub

    with FakeHub() as hub:
        hub.add_repo(REPO, hc.files_of(plain))
        hc.download(hub, REPO, cache)


def set_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# ---- the throttled volume ----------------------------------------------------------------

class Volume:
    """An ext4 image on a loop device, throttled by blkio, remounted for a cold page cache."""

    def __init__(self, image: Path, mount: Path, size_bytes: int) -> None:
        self.image, self.mount = image, mount
        self.root = mount          # where the set is written
        subprocess.run(["truncate", "-s", str(size_bytes), str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        self.dev = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                                  capture_output=True, text=True).stdout.strip()
        rdev = os.stat(self.dev).st_rdev
        self.majmin = f"{os.major(rdev)}:{os.minor(rdev)}"
        mount.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", self.dev, str(mount)], check=True)

    def throttle(self, bps: int, iops: int) -> None:
        (BLKIO / "blkio.throttle.read_bps_device").write_text(f"{self.majmin} {bps}")
        (BLKIO / "blkio.throttle.read_iops_device").write_text(f"{self.majmin} {iops}")

    def cold(self) -> None:
        """Unmount and mount again: the page cache of every file on it is gone."""
        subprocess.run(["sync"], check=True)
        subprocess.run(["umount", str(self.mount)], check=True)
        subprocess.run(["mount", self.dev, str(self.mount)], check=True)

    def bytes_read(self) -> int:
        for line in (BLKIO / "blkio.throttle.io_service_bytes").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == self.majmin and parts[1] == "Read":
                return int(parts[2])
        return 0

    def close(self) -> None:
        for knob in ("read_bps_device", "read_iops_device"):
            try:
                (BLKIO / f"blkio.throttle.{knob}").write_text(f"{self.majmin} 0")
            except OSError:
                pass
        subprocess.run(["umount", str(self.mount)], check=False)
        subprocess.run(["losetup", "-d", self.dev], check=False)
        self.image.unlink(missing_ok=True)


class FuseVolume:
    """A local folder served read-only through throttlefs (per-stream and per-volume limits, latency)."""

    def __init__(self, root: Path, mount: Path, stream_mbps: float, volume_mbps: float, latency_ms: float) -> None:
        from throttlefs import ThrottleFS

        self.root, self.mount = root, mount
        root.mkdir(parents=True, exist_ok=True)
        self.fs = ThrottleFS(root, mount, stream_mbps, volume_mbps, latency_ms, cache=True)
        self.fs.__enter__()

    def throttle(self, bps: int, iops: int) -> None:
        """Nothing to do: the limits were set at mount."""

    def cold(self) -> None:
        """Mount again (its files bypass the page cache anyway: direct_io)."""
        self.fs.remount()

    def bytes_read(self) -> int:
        return self.fs.counters().bytes_served

    def close(self) -> None:
        self.fs.__exit__(None, None, None)


# ---- one cold worker ---------------------------------------------------------------------

def workflow(server: ComfyServer, image: str, seed: int) -> dict:
    """The shipped 480P workflow on the bench set, without its LoRA node (its LoRA fits the 14B)."""
    wf = tiny_workflow(API_WORKFLOWS[0], image, seed=seed)
    loader, lora = node_id(wf, "WanVolumeModelLoader"), node_id(wf, "WanVolumeLoraApply")
    wf[loader]["inputs"]["model_set"] = SET
    wf[node_id(wf, "WanVolumeSampler")]["inputs"]["pipe"] = [loader, 0]
    del wf[lora]
    return wf


def executed(entry: dict) -> float:
    """Seconds from execution_start to execution_success by ComfyUI's own timestamps (the
    history poll ticks every 0.5 s, too coarse for a 1-2 s prompt)."""
    stamps = {kind: data["timestamp"] for kind, data in entry["status"].get("messages", [])
              if kind in ("execution_start", "execution_success")}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def rehearsal_size() -> str:
    """WAN_VOLUME_WARMUP_RUN for the bench's workflow: its sampler's own size."""
    inputs = workflow_inputs(tiny_workflow(API_WORKFLOWS[0], "two_people.png"))
    return "{width}x{height}x{frames}".format(**inputs)


def workflow_inputs(wf: dict) -> dict:
    return wf[node_id(wf, "WanVolumeSampler")]["inputs"]


def report_of(entry: dict) -> dict:
    return next(r for n in entry["outputs"].values() for r in n.get("wanvolume_report", []))


def readers_chosen(log: str) -> str:
    """The loads' reader counts, from readers.py's INFO lines in ComfyUI's log ("-" if none)."""
    counts = [m.group(1) for m in re.finditer(r"readers: (\d+ \([^)]*\))", log)]
    return "; ".join(counts) or "-"


def finished(entry: dict) -> float:
    """When ComfyUI finished the prompt (its execution_success timestamp, epoch seconds)."""
    return next(data["timestamp"] for kind, data in entry["status"].get("messages", [])
                if kind == "execution_success") / 1000


def run_once(vol, base: Path, models: Path, env: dict, warm_wait: bool) -> dict:
    """One cold worker. Times end at ComfyUI's own execution_success timestamp (the history is
    polled every 0.5 s: too coarse next to a 1 s prompt) and start at the wall clock when the
    server is started or the prompt is posted."""
    vol.cold()
    before = vol.bytes_read()
    started = time.time()
    server = ComfyServer(base, models, env=env).start(timeout=600)
    try:
        up = time.time()
        if warm_wait:
            while (server.get_json("/wan_volume/status").get("warming") or {}).get("active"):
                time.sleep(0.1)
        image = server.upload_image(ROOT / "assets" / "two_people.png")
        queued = time.time()
        first = server.run(workflow(server, image, 1), timeout=1200)
        if first["status"]["status_str"] != "success":
            raise RuntimeError(f"the first prompt failed: {first['status']}\n{server.log_tail(40)}")
        read = vol.bytes_read() - before
        warm_start = time.time()
        second = server.run(workflow(server, image, 2), timeout=1200)
        load = next(p for p in report_of(first)["phases"] if p["name"] == "load")
        first_run, warm_run = executed(first), executed(second)
        readers = readers_chosen(server.log_path.read_text(errors="replace"))
        return {"readers": readers, "start_to_ready": up - started, "start_to_video": finished(first) - started,
                "prompt_to_video": finished(first) - queued, "warm_prompt": finished(second) - warm_start,
                "bytes_read": read, "load_split": load.get("split"),
                "first_status": first["status"]["status_str"], "second_status": second["status"]["status_str"],
                "ready_wait": queued - up, "first_executed": first_run, "warm_executed": warm_run}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mbps", type=float, default=240.0, help="volume read bandwidth, MB/s")
    ap.add_argument("--iops", type=int, default=4000, help="volume read requests per second")
    ap.add_argument("--dim", type=int, default=1024, help="DiT width (a multiple of 128)")
    ap.add_argument("--layers", type=int, default=10, help="DiT blocks")
    ap.add_argument("--fuse", type=fuse_limits, metavar="STREAM,VOLUME,LATENCY",
                    help="serve the set through tests/throttlefs.py: MB/s per stream, MB/s per volume, "
                         "ms per request (0: unlimited), e.g. 100,400,2; --mbps and --iops are then unused")
    ap.add_argument("--runs", default="1,2,3,4,5,6,7,8", help="which runs, by number (1: plain folder, prefetch "
                    "off; 2: prefetch on; 3: warm-up on; 4: HF cache, prefetch off; 5: HF cache, warm-up on; "
                    "6: warm-up with WAN_VOLUME_WARMUP_RUN's rehearsal at the workflow's size; 7 and 8: 1 and "
                    "4 with WAN_VOLUME_READAHEAD=off, the load reading alone as before the read-ahead)")
    ap.add_argument("--repeat", type=int, default=1, help="run each chosen run this many times (the table "
                    "then ends with each mode's median ratios: one prompt varies by 10-40 %% on this machine)")
    ap.add_argument("--keep-logs", type=Path, help="copy each run's ComfyUI log (and throttlefs's) here")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.fuse is None and (os.geteuid() != 0 or not (BLKIO / "blkio.throttle.read_bps_device").exists()):
        sys.exit("needs root and the cgroup v1 blkio controller (losetup, mount, read_bps_device), "
                 "or --fuse STREAM,VOLUME,LATENCY")
    work = Path(tempfile.mkdtemp(prefix="coldstart-"))
    src = write_set(work / "src" / SET, args.dim, args.layers)
    size = set_bytes(src)
    if args.fuse:
        vol = FuseVolume(work / "backing", work / "mnt", *args.fuse)
    else:
        vol = Volume(work / "volume.img", work / "mnt", int(size * 2.6) + 256 * MB)
    try:
        rows = bench(vol, work, src, size, args)
    finally:
        vol.close()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, size, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def fuse_limits(text: str) -> tuple[float, float, float]:
    try:
        stream, volume, latency = (float(x) for x in text.split(","))
        if min(stream, volume, latency) >= 0:
            return stream, volume, latency
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"--fuse {text!r}: expected STREAM,VOLUME,LATENCY (MB/s, MB/s, ms; "
                                     "0 or more each), e.g. --fuse 100,400,2")


def bench(vol, work: Path, src: Path, size: int, args) -> list[dict]:
    plain = vol.mount / "models"
    shutil.copytree(src, vol.root / "models" / SET)
    hub_cache(src, vol.root / "hub")
    (vol.root / "empty-models").mkdir()
    vol.throttle(int(args.mbps * MB), args.iops)
    runs = [("plain folder", "prefetch off", plain, {}),
            ("plain folder", "prefetch on", plain, {"WAN_VOLUME_PREFETCH": SET}),
            ("plain folder", "warm-up on", plain, {"WAN_VOLUME_WARMUP": SET}),
            ("HF cache", "prefetch off", vol.mount / "empty-models", {"WAN_VOLUME_HF_CACHE": str(vol.mount / "hub")}),
            ("HF cache", "warm-up on", vol.mount / "empty-models",
             {"WAN_VOLUME_HF_CACHE": str(vol.mount / "hub"), "WAN_VOLUME_WARMUP": SET}),
            ("plain folder", "warm-up + rehearsal", plain,
             {"WAN_VOLUME_WARMUP": SET, "WAN_VOLUME_WARMUP_RUN": rehearsal_size()}),
            ("plain folder", "read-ahead off", plain, {"WAN_VOLUME_READAHEAD": "off"}),
            ("HF cache", "read-ahead off", vol.mount / "empty-models",
             {"WAN_VOLUME_HF_CACHE": str(vol.mount / "hub"), "WAN_VOLUME_READAHEAD": "off"})]
    rows = []
    chosen = {int(n) for n in args.runs.split(",")}
    for k, (i, (layout, mode, models, extra)) in enumerate((i, run) for i, run in enumerate(runs)
                                                            for _ in range(args.repeat)):
        if i + 1 not in chosen:
            continue
        env = {"WAN_VOLUME_HF_CACHE": "off", "WAN_VOLUME_STATE_DIR": str(work / f"state{k}"), **extra}
        try:
            row = run_once(vol, work / f"comfy{k}", models, env, "WAN_VOLUME_WARMUP" in extra)
        finally:
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in [work / f"comfy{k}" / "comfyui.log", getattr(getattr(vol, "fs", None), "log_path", None)]:
                    if log is not None and log.exists():
                        shutil.copy(log, args.keep_logs / f"run{i + 1}-{k}-{log.name}")
        rows.append({"layout": layout, "mode": mode, **row})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def print_table(rows: list[dict], size: int, args) -> None:
    if args.fuse:
        stream, volume, latency = args.fuse
        mbps = volume or float("inf")
        where = f"throttlefs: {stream:g} MB/s per stream, {volume:g} MB/s per volume, {latency:g} ms per request"
    else:
        mbps, where = args.mbps, f"volume {args.mbps:g} MB/s, {args.iops} IOPS"
    bound = size / (mbps * MB)
    print(f"\nset {size / MB:.0f} MB; {where}; read bound {bound:.2f} s (the volume limit)")
    print("| layout | mode | start -> video s | /prompt -> video s | warm prompt s | "
          "/prompt -> video / (read bound + warm) | first / warm prompt (executed) | bytes read / set | "
          "load: read / convert / to-device s | readers |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["load_split"] or {}
        split = (f"{s['read']:.2f} / {s['convert']:.2f} / {s['to_device']:.2f}"
                 + (f" (+hash {s['hash']:.2f})" if s.get("hash", 0) > 0.01 else "")) if s else "(no read)"
        print(f"| {r['layout']} | {r['mode']} | {r['start_to_video']:.1f} | {r['prompt_to_video']:.1f} | "
              f"{r['warm_prompt']:.1f} | {r['prompt_to_video'] / (bound + r['warm_prompt']):.2f} | "
              f"{r['first_executed'] / r['warm_executed']:.2f} | {r['bytes_read'] / size:.3f} | {split} | "
              f"{r['readers']} |")
    if args.repeat > 1:
        print(f"\nmedians over {args.repeat} runs each:")
        for layout, mode in dict.fromkeys((r["layout"], r["mode"]) for r in rows):
            mine = [r for r in rows if (r["layout"], r["mode"]) == (layout, mode)]
            cold = statistics.median(r["prompt_to_video"] / (bound + r["warm_prompt"]) for r in mine)
            first = statistics.median(r["prompt_to_video"] / r["warm_prompt"] for r in mine)
            print(f"- {layout}, {mode}: /prompt -> video / (read bound + warm) {cold:.2f}; "
                  f"first / warm prompt {first:.2f}")


if __name__ == "__main__":
    main()
