"""Write frames to a video file with imageio-ffmpeg, and read facts back."""
from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    extension: str
    codec: str
    pix_fmt: str
    crf_flag: list[str]
    extra: tuple[str, ...] = ()


FORMATS = {
    "h264-mp4": VideoFormat("mp4", "libx264", "yuv420p", ["-crf"], ("-preset", "medium")),
    "h265-mp4": VideoFormat("mp4", "libx265", "yuv420p", ["-crf"], ("-tag:v", "hvc1")),
    "webm": VideoFormat("webm", "libvpx-vp9", "yuv420p", ["-crf"], ("-b:v", "0")),
}
MIME = {"mp4": "video/mp4", "webm": "video/webm"}


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [F,H,W,3] in [0,1] (or uint8) -> C-contiguous uint8, padded to even width/height.

    yuv420p needs even sizes; imageio-ffmpeg writes an empty file for odd ones without raising.
    Padding repeats the edge pixels, so nothing is cropped.
    """
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise InvalidInput("expected an IMAGE batch [frames, height, width, 3]", field="images",
                           value=tuple(frames.shape), fix="connect the sampler's IMAGE output")
    frames = frames[..., :3]
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames)


def write_video(frames: np.ndarray, path: Path, fps: float = 16.0, fmt: str = "h264-mp4",
                crf: int = 19, metadata: dict[str, object] | None = None,
                on_progress=None) -> Path:
    """Encode ``frames`` to ``path``; ``metadata`` values are stored as JSON tags (mp4/webm)."""
    import imageio_ffmpeg

    if fmt not in FORMATS:
        raise InvalidInput("unknown format", field="format", value=fmt, fix=f"use one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    data = to_uint8(frames)
    n, h, w, _ = data.shape
    params = [*spec.crf_flag, str(int(crf)), *spec.extra]
    for key, value in (metadata or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        params += ["-metadata", f"{key}={text}"]
    if spec.extension == "mp4":
        params += ["-movflags", "+faststart+use_metadata_tags"]
    path = Path(path)
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec=spec.codec,
                                         pix_fmt_out=spec.pix_fmt, quality=None, macro_block_size=1,
                                         output_params=params, ffmpeg_log_level="error")
    writer.send(None)
    for i, frame in enumerate(data):
        writer.send(frame)
        if on_progress is not None:
            on_progress(i + 1, n)
    writer.close()
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"ffmpeg wrote no data to {path} ({w}x{h}, {n} frames, {fmt})")
    log.info("wrote %s (%dx%d, %d frames, %.3g fps)", path, w, h, n, fps)
    return path


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    width: int
    height: int
    fps: float


def probe(path: Path) -> VideoFacts:
    """Frame count, size and fps, read with imageio-ffmpeg (no ffprobe needed)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    count = sum(1 for _ in reader)
    w, h = meta["size"]
    return VideoFacts(frames=count, width=w, height=h, fps=float(meta["fps"]))


def read_frames(path: Path) -> np.ndarray:
    """All frames as uint8 [F, H, W, 3]."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])


def read_metadata(path: Path) -> dict[str, str]:
    """The container's metadata tags, via ``ffmpeg -f ffmetadata``."""
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                          "-f", "ffmetadata", "-"], capture_output=True, check=True).stdout.decode()
    tags: dict[str, str] = {}
    key = None
    for raw in _ffmetadata_lines(out):
        if raw.startswith(";") or raw.startswith("["):
            continue
        k, sep, v = raw.partition("=")
        if sep:
            key = k
            tags[key] = v
    return tags


def _ffmetadata_lines(text: str) -> list[str]:
    """Undo ffmetadata escaping (``\\=``, ``\\;``, ``\\#``, ``\\\\``, escaped newlines)."""
    lines, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if c == "\n":
            lines.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines
