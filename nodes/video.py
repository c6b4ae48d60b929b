"""WanVolumeVideoCombine: frames -> MP4/WebM in ComfyUI's output folder, previewed like SaveVideo."""
from __future__ import annotations

import os

import torch
from comfy_api.latest import io, ui

from .common import CATEGORY, Progress
from .engine import video


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
                io.Float.Input("fps", default=16.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Wan2.1 generates 16 fps."),
                io.Combo.Input("format", options=list(video.FORMATS), default="h264-mp4",
                               tooltip="h264-mp4 plays everywhere; h265-mp4 is smaller; webm (VP9) for the web."),
                io.Int.Input("crf", default=19, min=0, max=63,
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
    def execute(cls, images: torch.Tensor, fps: float, format: str, crf: int, filename_prefix: str,
                save_output: bool, embed_workflow: bool = True) -> io.NodeOutput:
        import folder_paths

        frames = images.cpu().numpy()
        n, h, w = frames.shape[0], frames.shape[1], frames.shape[2]
        root = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, root, w, h)
        ext = video.FORMATS[format].extension if format in video.FORMATS else "mp4"
        file = f"{name}_{counter:05}_.{ext}"
        bar = Progress(n)
        path = video.write_video(frames, os.path.join(folder, file), fps=fps, fmt=format, crf=crf,
                                 metadata=cls._metadata(embed_workflow), on_progress=bar.update)
        kind = io.FolderType.output if save_output else io.FolderType.temp
        return io.NodeOutput(str(path), ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, kind)]))

    @classmethod
    def _metadata(cls, embed_workflow: bool) -> dict | None:
        from comfy.cli_args import args

        if not embed_workflow or args.disable_metadata:
            return None
        meta = dict(cls.hidden.extra_pnginfo or {})
        if cls.hidden.prompt is not None:
            meta["prompt"] = cls.hidden.prompt
        return meta or None
