"""Benchmarks for the volume tools; prints ratios measured side by side in one run.

1. verify (parallel, both cores) vs plain `sha256sum` on the same files.
2. check on a full-size (82 GB apparent, sparse) wan21-i2v-720p-shaped set.
3. On the fake Hub with one fault plan (a dropped connection, a 503, a SIGKILL mid-file and a
   rerun): bytes served and wall time for `wanvolume.py preload` vs `huggingface_hub.snapshot_download`.
   Each tool is rerun (as a user would) until it exits 0, at most 5 runs.
4. On the fake Hub with a per-connection throttle (the real Hub serves each connection at a
   limited rate) and a repo shaped like Wan2.1-I2V-14B-720P scaled down: wall time for
   `preload --workers 1`, `--workers 4` (the default), `--workers 8` and `snapshot_download`
   (8 files at once), and their ratios.

Usage: .venv/bin/python bench/bench_volume.py [--verify-mb 1024] [--hub-mb 96] [--conn-mbps 10]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_hub import Fault, FakeHub, tiny_safetensors  # noqa: E402
from wan_engine.store import check as chk  # noqa: E402
from wan_engine.store import manifest as mf  # noqa: E402
from wan_engine.store.verify import verify  # noqa: E402

GB = 10**9


def bench_verify(work: Path, total_mb: int) -> None:
    files = []
    for i in range(4):
        f = work / "set" / f"shard-{i}.bin"
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "wb") as fh:
            for _ in range(total_mb // 4):
                fh.write(os.urandom(1 << 20))
        files.append(f)
    man = mf.Manifest("bench")
    for f in files:
        man.entries[f"set/{f.name}"] = mf.ManifestEntry(f"set/{f.name}", f.stat().st_size,
                                                        mf.file_sha256(f), "bench/bench", "0" * 40)
    mf.save_manifest(work, man)
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], check=True, capture_output=True)
    t_sum = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(f"printf '%s\\n' {' '.join(map(str, files))} | xargs -P2 -n1 sha256sum",
                   shell=True, check=True, capture_output=True)
    t_par = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = verify(work, show_progress=False, workers=2)
    t_ver = time.perf_counter() - t0
    assert report.ok
    mb = total_mb
    print(f"[verify] {mb} MiB in 4 files (page cache warm): sha256sum {t_sum:.2f}s "
          f"({mb / t_sum:.0f} MiB/s); xargs -P2 sha256sum {t_par:.2f}s ({mb / t_par:.0f} MiB/s); "
          f"wanvolume verify --workers 2 {t_ver:.2f}s ({mb / t_ver:.0f} MiB/s)")
    print(f"[verify] speed ratio verify / sha256sum = {t_sum / t_ver:.2f}x, "
          f"verify / (xargs -P2 sha256sum) = {t_par / t_ver:.2f}x")


def bench_check(work: Path) -> None:
    """A sparse copy of the original 720P repo's big files with valid headers."""
    shapes = [(f"Wan2.1-I2V-14B-720P/diffusion_pytorch_model-0000{i}-of-00007.safetensors",
               int(65.6 * GB / 7)) for i in range(1, 8)]
    shapes += [("Wan2.1-I2V-14B-720P/models_t5_umt5-xxl-enc-bf16.pth", int(11.4 * GB)),
               ("Wan2.1-I2V-14B-720P/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                int(4.77 * GB)),
               ("Wan2.1-I2V-14B-720P/Wan2.1_VAE.pth", 507_609_880)]
    man = mf.Manifest("wan21-i2v-720p")
    for rel, size in shapes:
        f = work / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "wb") as fh:
            if rel.endswith(".safetensors"):
                hdr = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,%d]}}' % (size - 8 - 128)
                fh.write(struct.pack("<Q", 128) + hdr.ljust(128))
                fh.truncate(size)
            else:
                fh.write(b"PK\x03\x04")
                fh.truncate(size - 22)
                fh.seek(size - 22)
                fh.write(b"PK\x05\x06" + b"\0" * 18)
        man.entries[rel] = mf.ManifestEntry(rel, size, "0" * 64, "Wan-AI/Wan2.1-I2V-14B-720P", "0" * 40)
    mf.save_manifest(work, man)
    mf.write_marker(work, man.name)
    total = sum(s for _, s in shapes)
    t0 = time.perf_counter()
    report = chk.check(work, "wan21-i2v-720p")
    t_in = time.perf_counter() - t0
    assert report.ok, report.message()
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, str(ROOT / "wanvolume.py"), "check", "--models-dir",
                         str(work), "--profile", "wan21-i2v-720p"], capture_output=True).returncode
    t_cli = time.perf_counter() - t0
    print(f"[check] {len(shapes)} files, {total / GB:.1f} GB apparent (sparse): in-process "
          f"{t_in * 1000:.1f} ms, `python wanvolume.py check` wall {t_cli * 1000:.0f} ms (exit {rc})")


SNAPSHOT = ("import sys; from huggingface_hub import snapshot_download; "
            "snapshot_download('acme/bench', local_dir=sys.argv[1])")


def _partial_bytes(folder: Path, needles: tuple[str, ...]) -> int:
    """Bytes in partial files whose name holds a needle (preload: the file name; stock: its etag)."""
    found = [p for p in folder.rglob("*") if p.name.endswith((".part", ".incomplete"))
             and any(n in p.name for n in needles) and p.is_file()]
    return sum(p.stat().st_size for p in found)


def _drive(cmd: list[str], env: dict, dest: Path, big: tuple[str, ...], kill_at: int) -> tuple[int, int, float]:
    """Run ``cmd`` until it exits 0 (max 6 runs); SIGKILL the first run that gets past ``kill_at``."""
    killed, runs, t0 = False, 0, time.perf_counter()
    while runs < 6:
        runs += 1
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not killed and proc.poll() is None:
            if _partial_bytes(dest, big) >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.005)
        if proc.wait() == 0:
            return runs, 0, time.perf_counter() - t0
    return runs, proc.returncode, time.perf_counter() - t0


def _plan(hub: FakeHub, size_a: int) -> None:
    hub.state.faults.clear()
    hub.fault("a.safetensors", Fault("none"), Fault("drop", after=int(size_a * 0.3)))
    hub.fault("b.safetensors", Fault("status", code=503))


def _intact(dest: Path, files: dict[str, bytes]) -> bool:
    return all((dest / k).is_file() and hashlib.sha256((dest / k).read_bytes()).digest()
               == hashlib.sha256(v).digest() for k, v in files.items())


def bench_hub(work: Path, hub_mb: int) -> None:
    n_a, n_b = hub_mb * 2 // 3 * 2**18, hub_mb // 3 * 2**18
    files = {"config.json": b"{}", "a.safetensors": tiny_safetensors(n_a, 1),
             "b.safetensors": tiny_safetensors(n_b, 2)}
    total = sum(len(v) for v in files.values())
    with FakeHub() as hub:
        hub.add_repo("acme/bench", files)
        hub.state.throttle_bps = 150e6
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(work / "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        rows = {}
        for tool in ("preload", "snapshot_download"):
            dest = work / tool
            cmd = ([sys.executable, str(ROOT / "wanvolume.py"), "preload", "--repo", "acme/bench",
                    "--models-dir", str(dest), "-q", "--retry-backoff", "0.2"]
                   if tool == "preload" else [sys.executable, "-c", SNAPSHOT, str(dest)])
            out = dest / "bench" if tool == "preload" else dest
            _plan(hub, len(files["a.safetensors"]))
            hub.reset_counts()
            needles = ("a.safetensors", hashlib.sha256(files["a.safetensors"]).hexdigest())
            runs, rc, wall = _drive(cmd, env, dest, needles, len(files["a.safetensors"]) // 2)
            rows[tool] = (runs, rc, wall, hub.served(), _intact(out, files))
        for tool, (runs, rc, wall, served, ok) in rows.items():
            print(f"[hub] {tool:18s} runs {runs} (exit {rc}), wall {wall:.2f}s, served "
                  f"{served / 2**20:.1f} MiB = {served / total:.2f}x the repo, files intact: {ok}")
        p, s = rows["preload"], rows["snapshot_download"]
        print(f"[hub] repo {total / 2**20:.1f} MiB, plan: SIGKILL at 50% of a.safetensors, then a drop "
              f"at 30% on its next GET, a 503 on b.safetensors; throttle 150 MB/s per response")
        print(f"[hub] ratios snapshot_download/preload: bytes served {s[3] / p[3]:.2f}x, "
              f"wall {s[2] / p[2]:.2f}x, runs {s[0]}/{p[0]}")
        bench_corrupt(work, hub, env, files)


def bench_corrupt(work: Path, hub: FakeHub, env: dict, files: dict[str, bytes]) -> None:
    for tool in ("preload", "snapshot_download"):
        dest = work / f"corrupt-{tool}"
        hub.state.faults.clear()
        hub.fault("a.safetensors", Fault("corrupt", offset=12345))
        cmd = ([sys.executable, str(ROOT / "wanvolume.py"), "preload", "--repo", "acme/bench",
                "--models-dir", str(dest), "-q"]
               if tool == "preload" else [sys.executable, "-c", SNAPSHOT, str(dest)])
        rc = subprocess.run(cmd, env=env, capture_output=True).returncode
        out = dest / "bench" if tool == "preload" else dest
        print(f"[hub] one corrupted byte, {tool:18s}: exit {rc}, files intact: {_intact(out, files)}")


def wan_shaped_files(total_mb: int) -> dict[str, bytes]:
    """Wan2.1-I2V-14B-720P's files (7 DiT shards of 9.4 GB, T5 11.4, CLIP 4.8, VAE 0.5) scaled."""
    gb = {f"diffusion_pytorch_model-0000{i}-of-00007.safetensors": 65.6 / 7 for i in range(1, 8)}
    gb.update({"models_t5_umt5-xxl-enc-bf16.pth": 11.4, "Wan2.1_VAE.pth": 0.51,
               "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth": 4.77})
    scale = total_mb * 2**20 / (sum(gb.values()) * GB)
    files = {name: tiny_safetensors(int(size * GB * scale) // 4, seed=i)
             for i, (name, size) in enumerate(gb.items())}
    files["config.json"] = b'{"model_type": "i2v"}'
    return files


def bench_workers(work: Path, total_mb: int, conn_mbps: float) -> None:
    files = wan_shaped_files(total_mb)
    total = sum(len(v) for v in files.values())
    runs = {"preload --workers 1": ["--workers", "1"], "preload --workers 4": ["--workers", "4"],
            "preload --workers 8": ["--workers", "8"], "snapshot_download": None}
    walls = {}
    with FakeHub() as hub:
        hub.add_repo("acme/wan", files)
        hub.state.throttle_bps = conn_mbps * 1e6
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(work / "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        for label, extra in runs.items():
            dest = work / label.replace(" ", "_")
            cmd = ([sys.executable, str(ROOT / "wanvolume.py"), "preload", "--repo", "acme/wan",
                    "--models-dir", str(dest), "-q", *extra] if extra else
                   [sys.executable, "-c", SNAPSHOT.replace("acme/bench", "acme/wan"), str(dest)])
            hub.reset_counts()
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, env=env, capture_output=True).returncode
            walls[label] = time.perf_counter() - t0
            out = dest / "wan" if extra else dest
            rate = total / 2**20 / walls[label]
            print(f"[workers] {label:20s} wall {walls[label]:6.2f}s ({rate:5.1f} "
                  f"MiB/s), exit {rc}, max {hub.state.max_in_flight} downloads at once, "
                  f"files intact: {_intact(out, files)}")
    one, four = walls["preload --workers 1"], walls["preload --workers 4"]
    snap = walls["snapshot_download"]
    print(f"[workers] repo {total / 2**20:.1f} MiB in {len(files)} files shaped like "
          f"Wan2.1-I2V-14B-720P, throttle {conn_mbps:g} MB/s per connection, no faults")
    print(f"[workers] ratios: preload --workers 1 / --workers 4 = {one / four:.2f}x, "
          f"snapshot_download / preload --workers 4 = {snap / four:.2f}x, "
          f"snapshot_download / preload --workers 8 = {snap / walls['preload --workers 8']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify-mb", type=int, default=1024)
    ap.add_argument("--hub-mb", type=int, default=96)
    ap.add_argument("--conn-mbps", type=float, default=10.0,
                    help="fake Hub throttle per connection for the --workers comparison")
    ap.add_argument("--only-workers", action="store_true", help="run only the --workers comparison")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="wv-bench-") as tmp:
        work = Path(tmp)
        if not args.only_workers:
            bench_verify(work / "verify", args.verify_mb)
            bench_check(work / "check")
            bench_hub(work / "hub", args.hub_mb)
        bench_workers(work / "workers", args.hub_mb, args.conn_mbps)


if __name__ == "__main__":
    main()
