"""Write frames to a video file with imageio-ffmpeg, and read facts back."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import rules
from .errors import InvalidInput
from .store.fetch import part_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    extension: str
    codec: str
    pix_fmt: str
    crf_max: int                 # the encoder's CRF range is 0..crf_max; above it is clamped silently
    extra: tuple[str, ...] = ()


FORMATS = {
    "h264-mp4": VideoFormat("mp4", "libx264", "yuv420p", 51, ("-preset", "medium")),
    "h265-mp4": VideoFormat("mp4", "libx265", "yuv420p", 51, ("-tag:v", "hvc1")),
    "webm": VideoFormat("webm", "libvpx-vp9", "yuv420p", 63, ("-b:v", "0")),
}
MIME = {"mp4": "video/mp4", "webm": "video/webm"}
FPS_MIN, FPS_MAX = 1.0, 120.0
CRF_DEFAULT = 19


def check_settings(fmt: object = None, crf: object = None, fps: object = None) -> None:
    """The encoder settings' rules; ``None`` is a value not known yet (a link at /prompt time)."""
    if fmt is not None:
        rules.choice("format", fmt, list(FORMATS))
    if crf is not None:
        top = FORMATS[fmt].crf_max if fmt is not None else max(f.crf_max for f in FORMATS.values())
        ranges = ", ".join(f"{k}: 0-{f.crf_max}" for k, f in FORMATS.items())
        rules.number("crf", crf, lo=0, hi=top, integer=True, example=CRF_DEFAULT,
                     context=f" for {fmt} ({ranges}; lower is better)" if fmt else f" ({ranges})")
    if fps is not None:
        rules.number("fps", fps, lo=FPS_MIN, hi=FPS_MAX, example=16.0, context=" (Wan2.1 makes 16 fps)")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [F,H,W,3] in [0,1] (or uint8) -> C-contiguous uint8, padded to even width/height.

    yuv420p needs even sizes; ffmpeg refuses odd ones. Padding repeats the edge pixels, so
    nothing is cropped.
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
                crf: int = CRF_DEFAULT, metadata: dict[str, object] | None = None,
                on_progress=None) -> Path:
    """Encode ``frames`` to ``path``; ``metadata`` values are stored as JSON tags (mp4/webm).

    The file appears at ``path`` only when complete: ffmpeg writes ``part_path(path)``, which is
    renamed at the end and removed on any error or interrupt (``on_progress`` raising). Metadata
    goes through an ffmetadata file, so its size has no command-line limit.
    """
    check_settings(fmt, crf, fps)
    spec = FORMATS[fmt]
    data = to_uint8(frames)
    n, h, w, _ = data.shape
    path = Path(path)
    part = part_path(path)
    meta_file = _metadata_file(metadata or {})
    try:
        _encode(data, part, fps, spec, int(crf), meta_file, on_progress)
        if not part.is_file() or part.stat().st_size == 0:
            raise RuntimeError(f"ffmpeg wrote no data to {part} ({w}x{h}, {n} frames, {fmt})")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
        Path(meta_file).unlink(missing_ok=True)
    log.info("wrote %s (%dx%d, %d frames, %.3g fps)", path, w, h, n, fps)
    return path


def _encode(data: np.ndarray, out: Path, fps: float, spec: VideoFormat, crf: int, meta_file: str,
            on_progress) -> None:
    import imageio_ffmpeg

    n, h, w, _ = data.shape
    rate = str(Fraction(fps).limit_denominator())
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", rate, "-i", "-",
           "-f", "ffmetadata", "-i", meta_file, "-map", "0:v", "-map_metadata", "1",
           "-c:v", spec.codec, "-pix_fmt", spec.pix_fmt, "-crf", str(crf), *spec.extra]
    if spec.extension == "mp4":
        cmd += ["-movflags", "+faststart+use_metadata_tags"]
    cmd += ["-f", spec.extension]   # the part file's name ends in .part: name the container
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([*cmd, str(out)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=errors)
        try:
            for i, frame in enumerate(data):
                proc.stdin.write(frame.tobytes())
                if on_progress is not None:
                    on_progress(i + 1, n)
            proc.stdin.close()
        except BrokenPipeError:
            pass                      # ffmpeg stopped early: its exit code and message follow
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            errors.seek(0)
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}) writing {out}: "
                               f"{errors.read().decode(errors='replace')[-2000:]}")


def _metadata_file(metadata: dict[str, object]) -> str:
    """An ffmetadata file holding ``metadata`` (values that are not text are stored as JSON)."""
    fd, name = tempfile.mkstemp(prefix="wanvolume-", suffix=".ffmeta")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(";FFMETADATA1\n")
        for key, value in metadata.items():
            text = value if isinstance(value, str) and "\0" not in value else \
                json.dumps(value, separators=(",", ":"))
            fh.write(f"{_ffmeta_escape(str(key))}={_ffmeta_escape(text)}\n")
    return name


def _ffmeta_escape(text: str) -> str:
    """ffmetadata escaping: a backslash before '=', ';', '#', '\\' and newlines."""
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


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
