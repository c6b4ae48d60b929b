"""A STAND-IN for a RunPod Serverless endpoint running worker-comfyui, in front of a real ComfyUI.

Written for the tests from what was read, not copied: RunPod's endpoint API (POST /run and
/runsync, GET /status/<job id>, GET /health, POST /cancel/<job id>, `Authorization: Bearer <key>`;
job states IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED) and the job contract of
runpod-workers/worker-comfyui 5.8.5 (commit d2a557235b3800d68dcc6fa3259125fdf4bed8a6, handler.py):
input {"workflow", "images": [{"name", "image": base64 or data URI}]}; each image is uploaded to
ComfyUI's /upload/image under its name; the workflow is queued on /prompt with a client id and
waited for on ComfyUI's websocket (``executing`` with node None = done, ``execution_error`` =
failed); every entry under a node output's ``images`` (not ``temp``) is fetched from /view and
returned as {"filename", "type": "base64", "data"} or, with a bucket, {"type": "s3_url", "data":
URL}. A handler result with ``error`` makes the job FAILED with that text (runpod-python's
run_job pops ``error``; the rest stays as ``output``). The real worker runs one job at a time:
so does this one. Not the real thing: no SDK, no webhooks, no request-size limits, no retries."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp

log = logging.getLogger(__name__)
WORKER_COMFYUI = "5.8.5 (d2a557235b3800d68dcc6fa3259125fdf4bed8a6)"


class Handler:
    """worker-comfyui's job contract against one ComfyUI (``comfy`` = http://host:port)."""

    def __init__(self, comfy: str, bucket_url: str | None = None, bucket: dict | None = None):
        self.comfy, self.bucket_url, self.bucket = comfy, bucket_url, bucket

    def __call__(self, job: dict) -> dict:
        return asyncio.run(self._run(job))

    async def _run(self, job: dict) -> dict:
        inp = job.get("input")
        if not isinstance(inp, dict) or inp.get("workflow") is None:
            return {"error": "Missing 'workflow' parameter"}
        images = inp.get("images")
        if images is not None and (not isinstance(images, list) or not all(
                isinstance(i, dict) and "name" in i and "image" in i for i in images)):
            return {"error": "'images' must be a list of objects with 'name' and 'image' keys"}
        async with aiohttp.ClientSession() as http:
            problems = [p for i in images or () if (p := await self._upload(http, i))]
            if problems:
                return {"error": "Failed to upload one or more input images", "details": problems}
            client_id = uuid.uuid4().hex
            async with http.ws_connect(f"{self.comfy}/ws?clientId={client_id}") as ws:
                async with http.post(f"{self.comfy}/prompt",
                                     json={"prompt": inp["workflow"], "client_id": client_id}) as resp:
                    body = await resp.json()
                if resp.status == 400:
                    return {"error": _validation_text(body)}
                prompt_id = body["prompt_id"]
                failure = await _wait(ws, prompt_id)
            async with http.get(f"{self.comfy}/history/{prompt_id}") as resp:
                outputs = (await resp.json()).get(prompt_id, {}).get("outputs", {})
            files = [await self._collect(http, job["id"], item) for out in outputs.values()
                     for item in out.get("images", ()) if item.get("type") != "temp"]
        if failure:
            return {"error": "Job processing failed", "details": [failure]} if not files else \
                {"images": files, "errors": [failure]}
        return {"images": files} if files else {"images": [], "status": "success_no_images"}

    async def _upload(self, http: aiohttp.ClientSession, image: dict) -> str | None:
        data = image["image"].split(",", 1)[-1]
        try:
            blob = base64.b64decode(data)       # as the worker: no strict check
        except (binascii.Error, ValueError) as exc:
            return f"Error decoding base64 for {image['name']}: {exc}"
        form = aiohttp.FormData()
        form.add_field("image", blob, filename=image["name"], content_type="image/png")
        form.add_field("overwrite", "true")
        async with http.post(f"{self.comfy}/upload/image", data=form) as resp:
            return None if resp.status == 200 else f"Error uploading {image['name']}: HTTP {resp.status}"

    async def _collect(self, http: aiohttp.ClientSession, job_id: str, item: dict) -> dict:
        query = {k: item.get(k, "") for k in ("filename", "subfolder", "type")}
        async with http.get(f"{self.comfy}/view", params=query) as resp:
            blob = await resp.read()
        if self.bucket_url is not None:
            key = f"{job_id}/{item['filename']}"
            self.bucket[key] = blob
            return {"filename": item["filename"], "type": "s3_url", "data": f"{self.bucket_url}/{key}"}
        return {"filename": item["filename"], "type": "base64", "data": base64.b64encode(blob).decode()}


async def _wait(ws: aiohttp.ClientWebSocketResponse, prompt_id: str) -> str | None:
    """Until ComfyUI says the prompt finished (None) or failed (the error text)."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        data = event.get("data", {})
        if data.get("prompt_id") != prompt_id:
            continue
        if event["type"] == "executing" and data.get("node") is None:
            return None
        if event["type"] == "execution_error":
            return (f"Workflow execution error: Node Type: {data.get('node_type')}, Node ID: "
                    f"{data.get('node_id')}, Message: {data.get('exception_message')}")
    return "Workflow monitoring loop exited without confirmation of completion or error."


def _validation_text(body: dict) -> str:
    """ComfyUI's HTTP 400 body as the worker words it: the message, then one line per node error."""
    error = body.get("error")
    message = error.get("message", "Workflow validation failed") if isinstance(error, dict) else str(error)
    if isinstance(error, dict) and error.get("type") == "prompt_outputs_failed_validation":
        message = "Workflow validation failed"
    lines = [f"Node {nid} ({kind}): {detail}" for nid, node in (body.get("node_errors") or {}).items()
             for kind, detail in node.items()]
    return f"{message}:\n" + "\n".join(f"• {line}" for line in lines) if lines else message


class Endpoint:
    """RunPod's endpoint API on 127.0.0.1 with one worker thread running ``handler``."""

    def __init__(self, comfy: str, api_key: str, s3: bool = False):
        self.api_key, self.jobs, self.bucket = api_key, {}, {}
        self.queue: queue.Queue = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._http_handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.handler = Handler(comfy, f"{self.url}/bucket" if s3 else None, self.bucket)
        self.counts = {"completed": 0, "failed": 0}

    def start(self) -> "Endpoint":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._worker, daemon=True).start()
        return self

    def stop(self) -> None:
        self.queue.put(None)
        self.server.shutdown()
        self.server.server_close()

    def _worker(self) -> None:
        while (job_id := self.queue.get()) is not None:
            job = self.jobs[job_id]
            if job["status"] == "CANCELLED":
                continue
            job.update(status="IN_PROGRESS", delayTime=int((time.monotonic() - job.pop("_t")) * 1000))
            start = time.monotonic()
            try:
                result = self.handler({"id": job_id, "input": job.pop("_input")})
                error = result.pop("error", None)
            except Exception as exc:            # the SDK reports a raised handler as FAILED
                result, error = {}, json.dumps({"error_type": str(type(exc)), "error_message": str(exc)})
            job["executionTime"] = int((time.monotonic() - start) * 1000)
            if result:
                job["output"] = result
            if error:
                job.update(status="FAILED", error=error)
            else:
                job["status"] = "COMPLETED"
            self.counts["failed" if error else "completed"] += 1

    def submit(self, body: dict) -> dict:
        job_id = f"{uuid.uuid4()}-u1"
        self.jobs[job_id] = {"id": job_id, "status": "IN_QUEUE", "_input": body.get("input"),
                             "_t": time.monotonic()}
        self.queue.put(job_id)
        return {"id": job_id, "status": "IN_QUEUE"}

    def health(self) -> dict:
        states = [j["status"] for j in self.jobs.values()]
        return {"jobs": {"completed": self.counts["completed"], "failed": self.counts["failed"],
                         "inProgress": states.count("IN_PROGRESS"), "inQueue": states.count("IN_QUEUE"),
                         "retried": 0},
                "workers": {"idle": int("IN_PROGRESS" not in states), "running": int("IN_PROGRESS" in states)}}

    def _http_handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Routes(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args) -> None:
                log.debug("stand-in: " + fmt, *args)

            def _send(self, status: int, body: object, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {endpoint.api_key}":
                    return True
                self._send(401, {"error": "Unauthorized"})
                return False

            def do_GET(self) -> None:
                if self.path.startswith("/bucket/"):            # the "S3" URLs need no key
                    blob = endpoint.bucket.get(self.path.removeprefix("/bucket/"))
                    return self._send(200, None, blob) if blob is not None else self._send(404, {})
                if not self._authorised():
                    return
                if self.path == "/health":
                    return self._send(200, endpoint.health())
                job = endpoint.jobs.get(self.path.removeprefix("/status/"))
                if not self.path.startswith("/status/") or job is None:
                    return self._send(404, {"error": f"no such route or job: {self.path}"})
                self._send(200, {k: v for k, v in job.items() if not k.startswith("_")})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/run":
                    return self._send(200, endpoint.submit(body))
                if self.path.startswith("/cancel/") and (job := endpoint.jobs.get(self.path[8:])):
                    job["status"] = "CANCELLED"
                    return self._send(200, {"id": job["id"], "status": "CANCELLED"})
                self._send(404, {"error": f"no such route: {self.path}"})

        return Routes
