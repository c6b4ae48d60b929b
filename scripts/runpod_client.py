#!/usr/bin/env python3
"""Client for a RunPod Serverless endpoint running docker/Dockerfile.serverless (worker-comfyui + the pack).

    export RUNPOD_API_KEY=...  RUNPOD_ENDPOINT_ID=...
    python scripts/runpod_client.py run --photo couple.png --workflow workflows/api/kiss_i2v_480p_fast.json \\
        --prompt "Two friends hug on a beach at sunset, then they engage in k144ing kissing." --seed 7 --out out/
    python scripts/runpod_client.py check      # a job that reports the worker's volume (no model load)
    python scripts/runpod_client.py health     # GET /health: the endpoint's workers and job counts
    python scripts/runpod_client.py status JOB_ID

It sends worker-comfyui's request body {"input": {"workflow": ..., "images": [{"name", "image"}]}}
to /run, polls /status/<id>, and writes what comes back under output.images (the MP4 and its run
report; base64, or an S3 URL when the endpoint sets BUCKET_ENDPOINT_URL). --url talks to any
server with the same routes (a self-hosted worker, tests/runpod_standin.py). Standard library only.
Exit codes: 0 done (check: the volume is ready), 1 the job failed or the volume is not ready,
2 bad arguments or input, 3 the endpoint refused or could not be reached, 4 timed out.
"""
from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("runpod_client")
API = "https://api.runpod.ai/v2"
RUN_BODY_LIMIT = 10 * 1000 * 1000      # RunPod's /run request limit (10 MB; /runsync 20 MB)
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
CHECK_WORKFLOW = {"1": {"class_type": "WanVolumeStatus", "inputs": {}}}
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"RIFF": ".webp"}
EXIT_FAILED, EXIT_USAGE, EXIT_HTTP, EXIT_TIMEOUT = 1, 2, 3, 4


class ClientError(Exception):
    """An error for the user: what was wrong (field and value) and the fix; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


@dataclass
class Endpoint:
    base: str                     # .../v2/<endpoint id>, or --url
    key: str | None
    timeout: float = 600.0        # seconds --timeout allows a job, queue and cold start included
    poll: float = 2.0
    headers: dict = field(init=False)

    def __post_init__(self) -> None:
        self.base = self.base.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if self.key:
            self.headers["Authorization"] = f"Bearer {self.key}"

    def call(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data, self.headers, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:500]
            raise ClientError(_http_problem(exc.code, self.base + path, text), EXIT_HTTP) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"{self.base}{path}: cannot reach the endpoint ({exc}); fix: check "
                              "--url / RUNPOD_ENDPOINT_ID and the network", EXIT_HTTP) from exc

    def submit(self, payload: dict) -> str:
        body = json.dumps(payload)
        if len(body) > RUN_BODY_LIMIT:
            raise ClientError(f"the request is {len(body) / 1e6:.1f} MB, over RunPod's 10 MB limit for /run "
                              "(the photo travels base64 in it); fix: send a smaller photo, e.g. a "
                              "1280 px JPEG")
        job = self.call("/run", payload)
        log.info("job %s: %s", job.get("id"), job.get("status"))
        return job["id"]

    def wait(self, job_id: str) -> dict:
        deadline, last = time.monotonic() + self.timeout, None
        while True:
            job = self.call(f"/status/{job_id}")
            if job.get("status") != last:
                last = job.get("status")
                log.info("job %s: %s", job_id, last)
            if last in DONE:
                return job
            if time.monotonic() > deadline:
                raise ClientError(
                    f"--timeout = {self.timeout:g} s: job {job_id} is still {last}; it keeps running on "
                    f"the endpoint. Fix: `runpod_client.py status {job_id}` later, or a longer --timeout "
                    "(a cold worker first reads 30-80 GB from the network volume: docs/serverless.md); "
                    f"POST {self.base}/cancel/{job_id} stops it", EXIT_TIMEOUT)
            time.sleep(self.poll)


def _http_problem(code: int, url: str, text: str) -> str:
    if code == 401:
        return (f"{url}: HTTP 401, the API key was refused; fix: set RUNPOD_API_KEY to a key from "
                "RunPod's console (Settings > API Keys) with access to this endpoint")
    if code == 404:
        return (f"{url}: HTTP 404, no such endpoint or job; fix: check RUNPOD_ENDPOINT_ID / --endpoint-id "
                "(the id on the endpoint's page) or the job id")
    return f"{url}: HTTP {code}: {text}"


def endpoint_from(args: argparse.Namespace) -> Endpoint:
    key = os.environ.get("RUNPOD_API_KEY") or None
    if args.url:
        return Endpoint(args.url, key, args.timeout, args.poll)
    endpoint_id = args.endpoint_id or os.environ.get("RUNPOD_ENDPOINT_ID")
    if not endpoint_id:
        raise ClientError("RUNPOD_ENDPOINT_ID is not set; fix: export RUNPOD_ENDPOINT_ID=<the id on the "
                          "endpoint's page> (or pass --endpoint-id, or --url for a self-hosted worker)")
    if not key:
        raise ClientError("RUNPOD_API_KEY is not set; fix: export RUNPOD_API_KEY=<a key from RunPod's "
                          "console, Settings > API Keys>")
    return Endpoint(f"{API}/{endpoint_id}", key, args.timeout, args.poll)


def read_photo(path: Path) -> tuple[str, str]:
    """(name, base64) of the photo; the name is its content hash, so jobs never overwrite each
    other's input on a worker."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClientError(f"--photo = {path}: cannot be read ({exc.strerror}); fix: name an existing "
                          "PNG, JPEG or WebP file") from exc
    ext = next((e for magic, e in IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if ext is None or (ext == ".webp" and data[8:12] != b"WEBP"):
        raise ClientError(f"--photo = {path}: not a PNG, JPEG or WebP image (starts with {data[:8]!r}); "
                          "fix: export the photo as PNG or JPEG")
    return f"wanvolume_{hashlib.sha256(data).hexdigest()[:16]}{ext}", base64.b64encode(data).decode()


def load_workflow(path: Path) -> dict:
    try:
        wf = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClientError(f"--workflow = {path}: not a readable JSON file ({exc}); fix: use an API-format "
                          "workflow such as workflows/api/kiss_i2v_480p_fast.json") from exc
    if not isinstance(wf, dict) or not all(isinstance(n, dict) and "class_type" in n for n in wf.values()):
        raise ClientError(f"--workflow = {path}: not an API-format workflow (nodes with class_type); fix: "
                          "use workflows/api/*.json, or ComfyUI's Workflow > Export (API)")
    return wf


def set_input(wf: dict, spec: str) -> None:
    """``CLASS.FIELD=VALUE`` (VALUE as JSON, else a string) on every node of that class."""
    target, sep, raw = spec.partition("=")
    class_type, dot, name = target.partition(".")
    nodes = [n for n in wf.values() if n["class_type"] == class_type]
    if not (sep and dot and name) or not nodes:
        present = sorted({n["class_type"] for n in wf.values()})
        raise ClientError(f"--input = {spec!r}: expected CLASS.FIELD=VALUE with CLASS one of {present}; fix: "
                          "e.g. --input WanVolumeSampler.frames=49")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    for node in nodes:
        node["inputs"][name] = value


def build_request(args: argparse.Namespace) -> dict:
    wf = load_workflow(args.workflow)
    name, data = read_photo(args.photo)
    loads = [n for n in wf.values() if n["class_type"] == "LoadImage"]
    if len(loads) != 1:
        raise ClientError(f"--workflow = {args.workflow}: has {len(loads)} LoadImage nodes, expected 1 for "
                          "the photo; fix: use one of workflows/api/*.json")
    loads[0]["inputs"]["image"] = name               # the worker uploads the photo under this name
    for flag, fld in (("prompt", "prompt"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            set_input(wf, f"WanVolumeSampler.{fld}={json.dumps(getattr(args, flag))}")
    for spec in args.input or ():
        set_input(wf, spec)
    return {"input": {"workflow": wf, "images": [{"name": name, "image": data}]}}


def finished_output(job: dict) -> dict:
    """The job's output, or a ClientError with the worker's own error text."""
    status, output = job.get("status"), job.get("output") or {}
    if status != "COMPLETED":
        details = output.get("details") if isinstance(output, dict) else None
        text = readable(str(job.get("error") or output))
        more = "".join(f"\n  {d}" for d in details or ())
        hint = ("\nfix: `runpod_client.py check` lists the sets and LoRAs on the worker's volume; name one "
                "with --input WanVolumeModelLoader.model_set=NAME, or fill the volume from a Pod "
                "(docs/volume.md)") if "model_set" in f"{text}{more}" else ""
        raise ClientError(f"job {job.get('id')} {status} on the worker: {text}{more}{hint}", EXIT_FAILED)
    for warning in output.get("errors") or ():
        log.warning("worker: %s", warning)
    return output


def readable(text: str) -> str:
    """worker-comfyui words a refused prompt as one line per node error, each a Python repr of
    ComfyUI's error list (with tracebacks); keep the first line and each error's own details (the
    pack's field, value and fix). Any other text is returned as it is."""
    lines = []
    for node, raw in re.findall(r"^• Node (\S+) \(errors\): (\[.*\])$", text, re.M):
        try:
            errors = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return text
        lines += [f"  node {node}: {e.get('details') or e.get('message')}" for e in errors if isinstance(e, dict)]
    if not lines:
        return text
    log.debug("worker's full error: %s", text)
    return "\n".join([text.splitlines()[0], *lines])


def save_files(output: dict, out_dir: Path) -> list[Path]:
    """Write each entry of output.images (base64 or S3 URL) into ``out_dir`` under its file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for item in output.get("images") or ():
        path = out_dir / Path(item["filename"]).name
        if item.get("type") == "s3_url":
            with urllib.request.urlopen(item["data"], timeout=300) as resp:
                path.write_bytes(resp.read())
        else:
            path.write_bytes(base64.b64decode(item["data"]))
        log.info("wrote %s (%d bytes)", path, path.stat().st_size)
        saved.append(path)
    return saved


def cmd_run(args: argparse.Namespace) -> int:
    endpoint = endpoint_from(args)
    job = endpoint.wait(endpoint.submit(build_request(args)))
    saved = save_files(finished_output(job), args.out)
    videos = [p for p in saved if p.suffix in (".mp4", ".webm")]
    if not videos:
        raise ClientError(f"job {job.get('id')} returned no video (output.images = {[p.name for p in saved]}); "
                          "fix: the workflow needs a WanVolumeVideoCombine (or SaveVideo) node", EXIT_FAILED)
    for report_path in (p for p in saved if p.suffix == ".json"):
        doc = json.loads(report_path.read_text())
        cost = doc.get("cost_usd")
        log.info("run report %s: %.1f s, cost %s", report_path.name, doc.get("seconds", 0.0),
                 "n/a (no price)" if cost is None else f"${cost:.4f}")
    log.info("video: %s (job %s: delay %s ms, execution %s ms)", videos[0], job.get("id"),
             job.get("delayTime"), job.get("executionTime"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    endpoint = endpoint_from(args)
    job = endpoint.wait(endpoint.submit({"input": {"workflow": CHECK_WORKFLOW}}))
    saved = save_files(finished_output(job), args.out)
    docs = [json.loads(p.read_text()) for p in saved if p.suffix == ".json"]
    doc = next((d for d in docs if "models_dir" in d), None)
    if doc is None:
        raise ClientError(f"job {job.get('id')} returned no volume status; fix: rebuild the image from "
                          "docker/Dockerfile.serverless (the pack's WanVolumeStatus node)", EXIT_FAILED)
    sets = [s["name"] for s in doc["model_sets"] + doc["hf_cache"]["model_sets"] if s["complete"]]
    loras = [lo["name"] for lo in doc["loras"]] + [lo["name"] for lo in doc["hf_cache"]["loras"]]
    log.info("volume %s: %s; sets %s; LoRAs %s", doc["models_dir"], "ready" if doc["ready"] else "NOT ready",
             sets or "none", loras or "none")
    if not doc["ready"]:
        log.error("fill it from a Pod: %s", doc.get("command") or "see docs/volume.md")
    print(json.dumps({"ready": doc["ready"], "models_dir": doc["models_dir"], "model_sets": sets,
                      "loras": loras, "job": job.get("id")}))
    return 0 if doc["ready"] else EXIT_FAILED


def cmd_health(args: argparse.Namespace) -> int:
    print(json.dumps(endpoint_from(args).call("/health")))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    job = endpoint_from(args).call(f"/status/{args.job_id}")
    if job.get("status") == "COMPLETED" and args.out:
        save_files(job.get("output") or {}, args.out)
    shown = {k: v for k, v in job.items() if k != "output"}
    print(json.dumps(shown))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="exit codes: 0 done, 1 job failed / volume not ready, 2 bad input, "
                                       "3 endpoint refused or unreachable, 4 timed out")
    p.add_argument("--endpoint-id", help="default: $RUNPOD_ENDPOINT_ID")
    p.add_argument("--url", help="base URL of a self-hosted endpoint instead (its /run, /status/<id>, /health)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for a job (default 1800)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between /status polls")
    p.add_argument("--verbose", "-v", action="store_true", help="debug log (a failed job's whole error text)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="photo + workflow -> MP4 and run report")
    run.add_argument("--photo", type=Path, required=True)
    run.add_argument("--workflow", type=Path, default=Path(__file__).resolve().parent.parent
                     / "workflows" / "api" / "kiss_i2v_480p_fast.json")
    run.add_argument("--prompt")
    run.add_argument("--seed", type=int)
    run.add_argument("--input", action="append", metavar="CLASS.FIELD=VALUE",
                     help="set an input on every node of a class, e.g. WanVolumeSampler.frames=49")
    run.add_argument("--out", type=Path, default=Path("."))
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="a job that returns the worker's volume status (loads no model)")
    check.add_argument("--out", type=Path, default=Path("."))
    check.set_defaults(func=cmd_check)
    sub.add_parser("health", help="GET /health of the endpoint").set_defaults(func=cmd_health)
    status = sub.add_parser("status", help="GET /status/<job id>")
    status.add_argument("job_id")
    status.add_argument("--out", type=Path, help="write a completed job's files here")
    status.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except ClientError as exc:
        log.error("%s", exc)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
