"""A fake Hugging Face Hub on 127.0.0.1 for tests and benchmarks.

Serves tiny repos the way the real Hub does for huggingface_hub 2.4 (plain HTTP, no Xet):
``/api/models/{repo}[/revision/{rev}]`` (siblings; sizes and LFS sha256 with ``blobs=true``),
``/api/models/{repo}/tree/{rev}`` and ``/paths-info/{rev}``, and ``/{repo}/resolve/{rev}/{path}``:
LFS files redirect (302, with X-Repo-Commit, X-Linked-Etag, X-Linked-Size) to ``/_cdn/...``, which
honours Range; small files are served directly with ETag = git blob id.

Faults are queued per file (consumed one per content GET): drop after N bytes, reset (RST),
an HTTP status (503...), stall after N bytes, corrupt the byte at an offset. ``throttle_bps`` slows
every content response. ``repo_status`` makes a repo answer 401/403/404 to everything;
``api_faults`` queues statuses for metadata calls. ``served`` counts body bytes per file path;
``in_flight``/``max_in_flight`` count content bodies being sent at once (parallel downloads).
"""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".model")


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = ""
    gated: bool = False          # answers 401 GatedRepo without a token

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1()
            for k in sorted(self.files):
                h.update(k.encode() + hashlib.sha256(self.files[k]).digest())
            self.commit = h.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def meta(self, path: str) -> dict:
        data = self.files[path]
        oid = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        out = {"size": len(data), "oid": oid}
        if self.is_lfs(path):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "pointerSize": 134}
        return out


@dataclass
class Fault:
    kind: str                    # "drop" | "reset" | "status" | "stall" | "corrupt"
    after: int = 0               # bytes sent before drop/reset/stall
    code: int = 503
    seconds: float = 5.0
    offset: int = 0              # absolute byte offset to corrupt


@dataclass
class HubState:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    faults: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    api_faults: deque = field(default_factory=deque)
    repo_status: dict[str, int] = field(default_factory=dict)
    throttle_bps: float = 0.0
    served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def tiny_safetensors(n_floats: int, seed: int = 0, key: str = "w") -> bytes:
    """A valid safetensors file holding one float32 tensor of ``n_floats`` values."""
    pattern = bytes((i * 31 + seed * 7) % 251 for i in range(251 * 4))
    payload = (pattern * (n_floats * 4 // len(pattern) + 1))[: n_floats * 4]
    header = json.dumps({key: {"dtype": "F32", "shape": [n_floats],
                               "data_offsets": [0, n_floats * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_POST(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        with self.state.lock:
            self.state.requests.append((self.command, path, self.headers.get("Range")))
        try:
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/"):], parse_qs(url.query))
            if path.startswith("/_cdn/"):
                return self._cdn(path[len("/_cdn/"):], head)
            if "/resolve/" in path:
                return self._resolve(path.lstrip("/"), head)
            self._send_json(404, {"error": "not found"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- metadata -----------------------------------------------------------------------
    def _repo_for(self, rest: str) -> tuple[str, FakeRepo | None, str]:
        parts = rest.split("/")
        repo_id, tail = "/".join(parts[:2]), "/".join(parts[2:])
        return repo_id, self.state.repos.get(repo_id), tail

    def _refuse(self, repo_id: str, repo: FakeRepo | None) -> bool:
        code = self.state.repo_status.get(repo_id)
        if repo is None or code == 404:
            self._send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return True
        if code in (401, 403) or (repo.gated and not self.headers.get("Authorization")):
            self._send_json(code or 401, {"error": "Access to model is restricted"},
                            {"X-Error-Code": "GatedRepo"})
            return True
        return False

    def _api(self, rest: str, query: dict) -> None:
        with self.state.lock:
            fault = self.state.api_faults.popleft() if self.state.api_faults else None
        if fault:
            return self._send_json(fault, {"error": "injected"})
        repo_id, repo, tail = self._repo_for(rest)
        if self._refuse(repo_id, repo):
            return
        kind, _, rev = tail.partition("/")
        rev = rev.split("/")[0] if kind in ("tree", "paths-info") else rev
        if (rev or "main") not in ("main", repo.commit):
            return self._send_json(404, {"error": "Invalid rev"}, {"X-Error-Code": "RevisionNotFound"})
        if kind in ("", "revision"):
            return self._send_json(200, self._info(repo_id, repo, "true" in query.get("blobs", [])))
        if kind == "tree":
            return self._send_json(200, [{"type": "file", "path": p, **repo.meta(p)}
                                         for p in sorted(repo.files)])
        if kind == "paths-info":
            body = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            wanted = body.get("paths", [])
            return self._send_json(200, [{"type": "file", "path": p, **repo.meta(p)}
                                         for p in wanted if p in repo.files])
        self._send_json(404, {"error": "unknown api"})

    def _info(self, repo_id: str, repo: FakeRepo, blobs: bool) -> dict:
        siblings = []
        for p in sorted(repo.files):
            s: dict = {"rfilename": p}
            if blobs:
                m = repo.meta(p)
                s.update(size=m["size"], blobId=m["oid"])
                if "lfs" in m:
                    s["lfs"] = {"sha256": m["lfs"]["oid"], "size": m["size"], "pointerSize": 134}
            siblings.append(s)
        return {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                "gated": repo.gated, "siblings": siblings}

    # --- files ----------------------------------------------------------------------------
    def _resolve(self, rest: str, head: bool) -> None:
        repo_part, _, tail = rest.partition("/resolve/")
        repo = self.state.repos.get(repo_part)
        if self._refuse(repo_part, repo):
            return
        rev, _, fpath = tail.partition("/")
        if rev not in ("main", repo.commit):
            return self._send_json(404, {"error": "rev"}, {"X-Error-Code": "RevisionNotFound"})
        if fpath not in repo.files:
            return self._send_json(404, {"error": "entry"}, {"X-Error-Code": "EntryNotFound"})
        meta = repo.meta(fpath)
        common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if "lfs" in meta:
            host = self.headers.get("Host")
            loc = f"http://{host}/_cdn/{repo_part}/{meta['lfs']['oid']}/{fpath}"
            return self._send(302, b"", {**common, "Location": loc, "ETag": f'"{meta["oid"]}"',
                                         "X-Linked-Etag": f'"{meta["lfs"]["oid"]}"',
                                         "X-Linked-Size": str(meta["size"])}, head)
        self._content(repo_part, repo, fpath, {**common, "ETag": f'"{meta["oid"]}"'}, head)

    def _cdn(self, rest: str, head: bool) -> None:
        parts = rest.split("/")
        repo_id, fpath = "/".join(parts[:2]), "/".join(parts[3:])
        repo = self.state.repos.get(repo_id)
        if repo is None or fpath not in repo.files:
            return self._send_json(404, {"error": "gone"})
        etag = f'"{repo.meta(fpath)["lfs"]["oid"]}"'
        self._content(repo_id, repo, fpath, {"ETag": etag, "X-Repo-Commit": repo.commit,
                                             "Accept-Ranges": "bytes"}, head)

    def _content(self, repo_id: str, repo: FakeRepo, fpath: str, headers: dict, head: bool) -> None:
        data = repo.files[fpath]
        start, status = self._range(len(data))
        if start is None:
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if head:
            return self._send(200, b"", {**headers, "Content-Length": str(len(data))}, True)
        with self.state.lock:
            queue = self.state.faults.get(fpath)
            fault = queue.popleft() if queue else None
        if fault and fault.kind == "status":
            return self._send_json(fault.code, {"error": "injected"})
        self._count_in_flight(+1)
        try:
            self._stream(fpath, data, start, status, headers, fault)
        finally:
            self._count_in_flight(-1)

    def _count_in_flight(self, step: int) -> None:
        with self.state.lock:
            self.state.in_flight += step
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)

    def _range(self, size: int) -> tuple[int | None, int]:
        rng = self.headers.get("Range")
        if not rng or not rng.startswith("bytes="):
            return 0, 200
        first = rng[len("bytes="):].split(",")[0].split("-")[0]
        start = int(first) if first else 0
        return (start, 206) if start < size else (None, 416)

    def _stream(self, fpath: str, data: bytes, start: int, status: int, headers: dict,
                fault: Fault | None) -> None:
        body = bytearray(data[start:])
        if fault and fault.kind == "corrupt" and start <= fault.offset < len(data):
            body[fault.offset - start] ^= 0xFF
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        limit = fault.after if fault and fault.kind in ("drop", "reset", "stall") else len(body)
        sent = self._write_throttled(fpath, memoryview(body)[:limit])
        if fault and fault.kind == "stall" and sent == limit:
            self.state.stopping.wait(fault.seconds)
        if fault and fault.kind in ("drop", "reset", "stall"):
            self._hang_up(fault.kind == "reset")
            return
        self.wfile.flush()

    def _write_throttled(self, fpath: str, view: memoryview) -> int:
        step = 64 * 1024
        sent = 0
        t0 = time.monotonic()
        while sent < len(view) and not self.state.stopping.is_set():
            piece = view[sent:sent + step]
            self.wfile.write(piece)
            sent += len(piece)
            with self.state.lock:
                self.state.served[fpath] += len(piece)
            if self.state.throttle_bps:
                ahead = sent / self.state.throttle_bps - (time.monotonic() - t0)
                if ahead > 0:
                    self.state.stopping.wait(ahead)
        return sent

    def _hang_up(self, reset: bool) -> None:
        self.wfile.flush()
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_json(self, code: int, obj: object, extra: dict | None = None) -> None:
        self._send(code, json.dumps(obj).encode(),
                   {"Content-Type": "application/json", **(extra or {})}, self.command == "HEAD")

    def _send(self, code: int, body: bytes, headers: dict, head: bool) -> None:
        self.send_response(code)
        headers = {"Content-Length": str(len(body)), **headers}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


class FakeHub:
    """Start with ``with FakeHub() as hub:``; ``hub.endpoint`` goes into HF_ENDPOINT."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_repo(self, repo_id: str, files: dict[str, bytes], **kw: object) -> FakeRepo:
        repo = FakeRepo(files, **kw)  # type: ignore[arg-type]
        self.state.repos[repo_id] = repo
        return repo

    def fault(self, path: str, *faults: Fault) -> None:
        with self.state.lock:
            self.state.faults[path].extend(faults)

    def served(self, path: str | None = None) -> int:
        with self.state.lock:
            return self.state.served[path] if path else sum(self.state.served.values())

    def reset_counts(self) -> None:
        with self.state.lock:
            self.state.served.clear()
            self.state.requests.clear()
            self.state.max_in_flight = self.state.in_flight

    def start(self) -> "FakeHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
