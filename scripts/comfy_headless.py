"""Run a real ComfyUI headless with this pack installed, and talk to it over HTTP.

Used by the demo (scripts/demo.py) and the integration tests. The server listens on 127.0.0.1 on
a free port and is stopped by its process id.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_NAME = "ComfyUI-WanVolume"


def comfyui_dir() -> Path:
    """COMFYUI_DIR (your own checkout) or the tree scripts/setup.sh unpacked into .comfyui/.

    The one place tests, benches and the demo resolve ComfyUI: a hard-coded ``.comfyui`` would
    silently test the default tree when COMFYUI_DIR points at another version.
    """
    d = Path(os.environ.get("COMFYUI_DIR") or REPO / ".comfyui").resolve()
    if not (d / "main.py").is_file():
        raise SystemExit(f"no ComfyUI at {d} (main.py missing): run `bash scripts/setup.sh` or set "
                         "COMFYUI_DIR to your ComfyUI checkout")
    return d


def comfyui_version(d: Path | None = None) -> tuple[int, ...]:
    """ComfyUI's version as numbers, read from ``comfyui_version.py`` without importing ComfyUI."""
    text = ((d or comfyui_dir()) / "comfyui_version.py").read_text()
    match = re.search(r"__version__\s*=\s*[\"']([0-9.]+)", text)
    if not match:
        raise RuntimeError(f"no __version__ in {(d or comfyui_dir()) / 'comfyui_version.py'}")
    return tuple(int(part) for part in match.group(1).split("."))


def import_comfyui(front: bool = False) -> Path:
    """Make ComfyUI's modules (``comfy``, ``folder_paths``...) importable in this process.

    Appended by default so ComfyUI's top-level ``nodes.py`` does not shadow the pack's ``nodes``
    package; ``front=True`` for a subprocess that imports only ComfyUI.
    """
    d = str(comfyui_dir())
    if d not in sys.path:
        if front:
            sys.path.insert(0, d)
        else:
            sys.path.append(d)
    return Path(d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI process with ``base_dir/custom_nodes/ComfyUI-WanVolume`` linked to this repo."""

    def __init__(self, base_dir: Path, models_dir: Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.models_dir = Path(models_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self.client_id = uuid.uuid4().hex

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base_dir),
               "--database-url", "sqlite:///:memory:", *self.extra_args]
        env = dict(os.environ, WAN_VOLUME_MODELS_DIR=str(self.models_dir), **self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=comfyui_dir(), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                method: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str):
        status, body = self.request(path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def upload_image(self, path: Path, name: str | None = None) -> str:
        boundary = uuid.uuid4().hex
        name = name or Path(path).name
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + Path(path).read_bytes() + \
               (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue"
                f"\r\n--{boundary}--\r\n").encode()
        status, resp = self.request("/upload/image", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise RuntimeError(f"upload failed: HTTP {status} {resp[:300]!r}")
        return json.loads(resp)["name"]

    def queue(self, prompt: dict, extra_data: dict | None = None) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, JSON body)."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        status, body = self.request("/prompt", json.dumps(payload).encode(),
                                    {"Content-Type": "application/json"})
        return status, json.loads(body)

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll /history until the prompt has finished; return its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get_json(f"/history/{prompt_id}")
            entry = hist.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and \
                    entry["status"].get("status_str") in ("success", "error"):
                return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died; log:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s; log:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        status, body = self.queue(prompt)
        if status != 200:
            raise RuntimeError(f"POST /prompt -> HTTP {status}: {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)

    def view(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item[k] for k in ("filename", "subfolder", "type")})
        status, body = self.request(f"/view?{query}")
        if status != 200:
            raise RuntimeError(f"GET /view?{query} -> HTTP {status}")
        return body


def outputs_of(entry: dict, node_id: str) -> list[dict]:
    """The media files a node returned under ``images`` in a /history entry (run reports left out:
    ``reports_of`` lists those)."""
    return [i for i in _listed(entry, node_id) if not i["filename"].endswith(".json")]


def reports_of(entry: dict, node_id: str) -> list[dict]:
    """The run reports (``.json``) a node listed beside its video under ``images``."""
    return [i for i in _listed(entry, node_id) if i["filename"].endswith(".json")]


def _listed(entry: dict, node_id: str) -> list[dict]:
    if entry["status"].get("status_str") != "success":
        msgs = entry["status"].get("messages", [])
        raise RuntimeError(f"prompt failed: {json.dumps(msgs)[:3000]}")
    return entry["outputs"][node_id]["images"]
