"""WanVolumeStatus: the volume's status document as a prompt's output (a health check through a queue).

A RunPod Serverless endpoint is a queue: a client reaches the worker only with a job, never with
ComfyUI's HTTP routes (GET /wan_volume/status). This node puts the same document into a prompt's
output: written as a JSON file in the output folder and listed under ``images``, the only key
worker-comfyui returns. It loads no model, so the job takes the time of a worker start plus about
a second (`scripts/runpod_client.py check` sends it; docs/serverless.md)."""
from __future__ import annotations

import logging
import time

from comfy_api.latest import io, ui

from .common import CATEGORY
from ..wan_engine import report
from .routes import server_status
from ..wan_engine.store.status import summary_line

log = logging.getLogger(__name__)
STATUS_UI_KEY = "wanvolume_status"
PREFIX = "WanVolume/volume_status"


class WanVolumeStatus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanVolumeStatus",
            display_name="Volume Status (WanVolume)",
            category=CATEGORY,
            description=("Writes the volume's status (the `wanvolume.py status --json` document, as GET "
                         "/wan_volume/status returns it) as a JSON file listed under 'images', so a "
                         "RunPod Serverless job can check a worker's volume. Loads no model."),
            inputs=[],
            outputs=[io.Boolean.Output("ready", tooltip="True when a complete model set and a LoRA are found.")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> int:
        return time.monotonic_ns()          # never a cached answer: the volume can change between jobs

    @classmethod
    def execute(cls) -> io.NodeOutput:
        import folder_paths

        doc = server_status()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            PREFIX, folder_paths.get_output_directory())
        file = f"{name}_{counter:05}_.json"
        report.write_json(doc, f"{folder}/{file}")
        log.info("volume status job: %s", summary_line(doc))
        entry = dict(ui.SavedResult(file, subfolder, io.FolderType.output), format="application/json")
        return io.NodeOutput(bool(doc["ready"]), ui={"images": [entry], STATUS_UI_KEY: [doc]})
