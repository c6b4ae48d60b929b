"""WanVolumeVideoCombine: frames -> MP4/WebM in ComfyUI's output folder, previewed like SaveVideo."""
from __future__ import annotations

import logging
import os

import torch
from comfy_api.latest import io, ui

from . import run_record, validation
from .common import CATEGORY, Progress
from ..wan_engine import report, rules, video
from ..wan_engine.errors import InvalidInput

log = logging.getLogger(__name__)
REPORT_UI_KEY = "wanvolume_report"   # web/js/run_report.js shows it under the node


class WanVolumeVideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanVolumeVideoCombine",
            display_name="Video Combine (WanVolume)",
            category=CATEGORY,
            description=("Writes the frames as a video with imageio-ffmpeg and shows it in the node. "
                         "The file is returned under 'images' like core SaveVideo, so API clients and "
                         "the RunPod serverless worker receive it."),
            inputs=[
                io.Image.Input("images", tooltip="Frames from the sampler (or any IMAGE batch)."),
                io.Float.Input("fps", default=16.0, min=video.FPS_MIN, max=video.FPS_MAX, step=1.0,
                               tooltip="Wan2.1 generates 16 fps."),
                io.Combo.Input("format", options=list(video.FORMATS), default="h264-mp4",
                               tooltip="h264-mp4 plays everywhere; h265-mp4 is smaller; webm (VP9) for the web."),
                io.Int.Input("crf", default=video.CRF_DEFAULT, min=0,
                             max=max(f.crf_max for f in video.FORMATS.values()),
                             tooltip="Quality: lower is better and bigger (h264/h265: 0-51, ~19 is visually "
                                     "lossless; webm: 0-63)."),
                io.String.Input("filename_prefix", default="WanVolume/kiss",
                                tooltip="Sub-folder and name prefix inside ComfyUI's output folder."),
                io.Boolean.Input("save_output", default=True,
                                 tooltip="On: keep in the output folder. Off: write to the temp folder "
                                         "(preview only, cleared on restart)."),
                io.Boolean.Input("embed_workflow", default=True,
                                 tooltip="Store the workflow and prompt in the file so dropping it on the "
                                         "canvas restores the graph (never when ComfyUI runs with "
                                         "--disable-metadata)."),
            ],
            outputs=[io.String.Output("filename", tooltip="Path of the written file.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, input_types: dict | None = None, **values) -> bool:
        """Everything Video Combine could fail on, before sampling (nodes/validation.py)."""
        known = validation.given_values(cls, values, input_types)
        validation.check_schema(cls, known)
        report.price_setting()   # a bad WAN_VOLUME_PRICE_PER_HOUR is refused before any work
        video.check_settings(known.get("format"), known.get("crf"), known.get("fps"))
        if "filename_prefix" in known:
            check_prefix(known["filename_prefix"], known.get("save_output", True))
        return True

    @classmethod
    @validation.checked
    def execute(cls, images: torch.Tensor, fps: float, format: str, crf: int, filename_prefix: str,
                save_output: bool, embed_workflow: bool = True) -> io.NodeOutput:
        record = run_record.current()
        record.begin("write")
        frames = images.cpu().numpy()
        n, h, w = frames.shape[0], frames.shape[1], frames.shape[2]
        folder, name, counter, subfolder, _ = resolve_prefix(filename_prefix, save_output, w, h)
        file = f"{name}_{counter:05}_.{video.FORMATS[format].extension}"
        record.settings |= {"video": {"width": w, "height": h, "frames": n, "fps": fps, "format": format,
                                      "crf": crf}}
        done: dict = {}

        def finish() -> dict:
            """Runs once the frames are encoded: the report goes into the file's tags."""
            record.end("write")
            done.update(record.finish(), video=file)
            return {} if _metadata_disabled() else {REPORT_UI_KEY: done}

        bar = Progress(n)
        path = video.write_video(frames, os.path.join(folder, file), fps=fps, fmt=format, crf=crf,
                                 metadata=cls._metadata(embed_workflow), on_progress=bar.update,
                                 late_metadata=finish)
        json_path = report.write_json(done, report.report_path(path))
        log.info(report.summary(done))
        kind = io.FolderType.output if save_output else io.FolderType.temp
        # The report's file is listed under `images` too, after the video: RunPod's worker returns
        # only what is listed there, and the editor previews the first entry that loads (the video).
        files = [ui.SavedResult(file, subfolder, kind),
                 dict(ui.SavedResult(json_path.name, subfolder, kind), format="application/json")]
        return io.NodeOutput(str(path), ui={"images": files, "animated": (True,), REPORT_UI_KEY: [done]})

    @classmethod
    def _metadata(cls, embed_workflow: bool) -> dict | None:
        if not embed_workflow or _metadata_disabled():
            return None
        meta = _extra_pnginfo(cls.hidden.extra_pnginfo)
        if cls.hidden.prompt is not None:
            meta["prompt"] = cls.hidden.prompt
        return meta or None


def _extra_pnginfo(extra: object) -> dict:
    """The prompt's ``extra_data.extra_pnginfo`` to embed as tags: an object, else nothing. ComfyUI
    does not pass it to validation, so a string or list cannot be refused at /prompt; it used to
    fail here after all the sampling, without naming it. Now the video is written without it."""
    if extra is None or isinstance(extra, dict):
        return dict(extra or {})
    log.warning("%s", InvalidInput(f"must be a JSON object, got {type(extra).__name__}; the video "
                                   "is written without it", field="extra_pnginfo", value=extra,
                                   fix='send extra_data.extra_pnginfo as an object such as '
                                       '{"workflow": {...}}, or leave it out'))
    return {}


def _metadata_disabled() -> bool:
    """ComfyUI's --disable-metadata: no tags in the file at all (the run report then lives in its
    .json and the node's output only)."""
    from comfy.cli_args import args

    return bool(args.disable_metadata)


def check_prefix(prefix: str, save_output: bool) -> None:
    """``resolve_prefix``'s checks at /prompt, creating nothing in the output folder: a prompt that
    is refused (for this or any other input) leaves no sub-folder behind. ComfyUI's resolution
    runs against a scratch folder; the real sub-folder's nearest existing folder must be writable."""
    import tempfile

    import folder_paths

    with tempfile.TemporaryDirectory(prefix="wanvolume-prefix-") as scratch:
        scratch = os.path.realpath(scratch)
        folder = resolve_prefix(prefix, save_output, root=scratch)[0]
        sub = os.path.relpath(folder, scratch)
    kind = "output" if save_output else "temp"
    root = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
    target = os.path.normpath(os.path.join(root, sub))
    while not os.path.isdir(target) and target != os.path.dirname(target):
        target = os.path.dirname(target)
    if not os.access(target, os.W_OK | os.X_OK):
        raise InvalidInput(f"the folder {target} is not writable", field="filename_prefix",
                           value=prefix, fix=f"make ComfyUI's {kind} folder writable or start ComfyUI "
                                             "with --output-directory pointing at one")


def resolve_prefix(prefix: str, save_output: bool, width: int = 0, height: int = 0,
                   root: str | None = None) -> tuple:
    """The engine's name rules, then ComfyUI's own resolution (%year% etc., output-folder check).

    ``folder_paths.get_save_image_path`` creates the sub-folder (inside the output folder only)."""
    import folder_paths

    rules.filename_prefix(prefix)
    kind = "output" if save_output else "temp"
    shown = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
    root = root or shown       # ``root``: a scratch folder standing in for it (check_prefix)
    fix = "use a relative name such as 'WanVolume/kiss'"
    try:
        resolved = folder_paths.get_save_image_path(prefix, root, width, height)
    except OSError as exc:
        raise InvalidInput(f"its folder cannot be created in ComfyUI's {kind} folder {shown} ({exc})",
                           field="filename_prefix", value=prefix, fix=fix) from exc
    except Exception as exc:   # ComfyUI raises a bare Exception for a path outside the folder
        raise InvalidInput(f"resolves outside ComfyUI's {kind} folder {shown}", field="filename_prefix",
                           value=prefix, fix=fix) from exc
    if not os.access(resolved[0], os.W_OK | os.X_OK):
        raise InvalidInput(f"the folder {resolved[0]} is not writable", field="filename_prefix",
                           value=prefix, fix=f"make ComfyUI's {kind} folder writable or start ComfyUI "
                                             "with --output-directory pointing at one")
    return resolved
