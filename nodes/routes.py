"""ComfyUI server side of the volume: one start-up log line and the /wan_volume/* routes.

GET  /wan_volume/status   the `wanvolume.py status --json` document (web panel, health checks),
                          plus ``memory_plan`` and ``warming`` (the start-up warm-up, null when off)
POST /wan_volume/preload  {"profile": NAME} fetches a known profile in a background thread; off
                          unless WAN_VOLUME_ALLOW_PRELOAD=1, because it writes to the volume
GET  /wan_volume/preload  the state of background preloads
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading

from aiohttp import web

from ..wan_engine.load import warmup
from ..wan_engine.store import paths, profiles
from ..wan_engine.store.status import summary_line, volume_status

log = logging.getLogger(__name__)

ENV_ALLOW_PRELOAD = "WAN_VOLUME_ALLOW_PRELOAD"
_done = False
_jobs: dict[str, dict] = {}
_jobs_lock = threading.Lock()


def server_status() -> dict:
    """The status document as this server sees it (GET /wan_volume/status, the WanVolumeStatus node)."""
    from .memory_plan import resident_plan

    doc = volume_status()
    doc["memory_plan"] = resident_plan()     # the loader badge names the plan the last prompt ran with
    doc["warming"] = warmup.warming()        # WAN_VOLUME_WARMUP's progress, null when off
    return doc


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, server_status))


async def get_preload_jobs(request: web.Request) -> web.Response:
    with _jobs_lock:
        return web.json_response({"jobs": dict(_jobs)})


async def post_preload(request: web.Request) -> web.Response:
    if os.environ.get(ENV_ALLOW_PRELOAD) != "1":
        return web.json_response(
            {"error": f"preloading from the server is off; set {ENV_ALLOW_PRELOAD}=1 to allow it, "
                      "or run `python wanvolume.py preload --profile NAME` in a terminal"},
            status=403)
    name, problem = await _profile_of(request)
    if problem:
        return web.json_response({"error": problem}, status=400)
    with _jobs_lock:
        if _jobs.get(name, {}).get("state") == "running":
            return web.json_response({"error": f"{name} is already being fetched",
                                      "job": _jobs[name]}, status=409)
        _jobs[name] = {"profile": name, "state": "running", "error": None}
    threading.Thread(target=_run_preload, args=(name,), daemon=True,
                     name=f"wan-volume-preload-{name}").start()
    return web.json_response({"job": _jobs[name]}, status=202)


async def _profile_of(request: web.Request) -> tuple[str, str | None]:
    """The profile named by a body ``{"profile": NAME}``, or what is wrong with the body."""
    expected = f'a JSON object {{"profile": NAME}} with NAME one of {", ".join(profiles.PROFILES)}'
    try:
        raw = await request.read()
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (ValueError, UnicodeDecodeError):
        return "", f"body: not valid JSON; expected {expected}"
    except RecursionError:     # [[[[...]]]] 100,000 deep: refused, not a 500 with a traceback
        return "", f"body: JSON nested too deep; expected {expected}"
    if not isinstance(body, dict):
        return "", f"body = {type(body).__name__}: expected {expected}"
    name = body.get("profile")
    if not isinstance(name, str) or name not in profiles.PROFILES:
        shown = repr(name)[:200]
        return "", f"profile = {shown}: unknown; expected one of {', '.join(profiles.PROFILES)}"
    return name, None


def _run_preload(name: str) -> None:
    from ..wan_engine.store.preload import preload
    state, error = "done", None
    try:
        report = preload(name, profiles.get_profile(name).sources, paths.primary_models_dir(),
                         show_progress=False)
        log.info("WanVolume: preload %s finished\n%s", name, report.summary())
    except Exception as exc:  # noqa: BLE001 - reported to the client, logged here
        state, error = "failed", str(exc)
        log.error("WanVolume: preload %s failed: %s", name, exc)
    with _jobs_lock:
        _jobs[name] = {"profile": name, "state": state, "error": error}


def register(routes: web.RouteTableDef) -> None:
    routes.get("/wan_volume/status")(get_status)
    routes.get("/wan_volume/preload")(get_preload_jobs)
    routes.post("/wan_volume/preload")(post_preload)


def log_summary() -> None:
    try:
        log.info(summary_line(volume_status()))
    except Exception as exc:  # noqa: BLE001 - start-up must not fail over a status line
        log.warning("WanVolume: could not read the volume status (%s)", exc)


def setup() -> None:
    """Log the volume summary and register the routes; safe to call more than once."""
    global _done
    if _done:
        return
    _done = True
    log_summary()
    from server import PromptServer  # ComfyUI's; only this module may import it
    register(PromptServer.instance.routes)
