"""Sampling a video into a run's frames with PyAV: one clip in, `frame_0001.png` … out."""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, SupportsBytes, cast

import av
import av.container
import av.error
from PIL import Image

from .errors import VideoRejected
from .images import safe_image_name

__all__ = [
    "MAX_SAMPLE_FPS",
    "MIN_SAMPLE_FPS",
    "VIDEO_EXTENSIONS",
    "SampledVideo",
    "VideoLimits",
    "probe_video",
    "safe_video_name",
    "sample_video",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv")
# FFmpeg's demuxers for those containers; anything else (a PNG, a GIF, raw streams) is refused.
VIDEO_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})
MIN_SAMPLE_FPS = 0.01
MAX_SAMPLE_FPS = 60.0
# A frame whose time is within this of the next sampling instant counts as on it (timestamps
# in a container are rounded to its time base).
_TIME_SLACK_S = 1e-3
# PIL's ROTATE_n turn counter-clockwise; these turn a picture clockwise by the key's degrees.
_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be: bytes, seconds, and frames kept."""

    max_bytes: int
    max_seconds: float
    max_frames: int


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about a clip before any frame is decoded."""

    duration_s: float | None
    clip_fps: float

    def expected_frames(self, fps: float) -> int | None:
        """How many frames sampling at `fps` keeps (the first, then one each 1/fps s)."""
        if self.duration_s is None:
            return None
        return math.floor(self.duration_s * fps - _TIME_SLACK_S) + 1


@dataclass(frozen=True)
class SampledVideo:
    """The frames kept, as PNG files named in model order, and the clip's facts."""

    frames: list[tuple[str, bytes]]
    duration_s: float
    clip_fps: float
    rotation: int = 0  # the clockwise turn applied to show the frames as the camera did


def safe_video_name(raw: str) -> str:
    """A safe base name for the stored clip, keeping a known video extension."""
    ext = Path(raw.replace("\\", "/")).suffix.lower()
    return safe_image_name(raw, ext if ext in VIDEO_EXTENSIONS else ".video")


def _source(data_or_path: bytes | Path) -> BinaryIO | str:
    return io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)


def _size(data_or_path: bytes | Path) -> int:
    if isinstance(data_or_path, bytes):
        return len(data_or_path)
    return Path(data_or_path).stat().st_size


def _check_rate(name: str, fps: float) -> None:
    if not (math.isfinite(fps) and MIN_SAMPLE_FPS <= fps <= MAX_SAMPLE_FPS):
        raise VideoRejected(
            name,
            f"the sampling rate must be from {MIN_SAMPLE_FPS:g} to {MAX_SAMPLE_FPS:g} frames "
            f"a second, not {fps!r}",
        )


def probe_video(
    name: str, data_or_path: bytes | Path, limits: VideoLimits, fps: float = 1.0
) -> VideoProbe:
    """Check the clip's size, that it decodes and its length; what its container says."""
    _check_rate(name, fps)
    size = _size(data_or_path)
    if size == 0:
        raise VideoRejected(name, "the file is empty")
    if size > limits.max_bytes:
        raise VideoRejected(
            name, f"it is {size / 2**20:.1f} MB, over the limit of {limits.max_bytes / 2**20:g} MB"
        )
    try:
        with av.open(_source(data_or_path), mode="r") as container:
            kind = container.format.name
            if not VIDEO_FORMATS & set(kind.split(",")):
                raise VideoRejected(
                    name, f"it is a {kind} file, not a video (use MP4, MOV, WebM or MKV)"
                )
            if not container.streams.video:
                raise VideoRejected(name, "it holds no video track")
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            rate = stream.average_rate or stream.guessed_rate
            probe = VideoProbe(duration, float(rate) if rate else 0.0)
    except VideoRejected:
        raise
    except av.error.EOFError:
        raise VideoRejected(name, "the clip has no frames: it ends before its first one") from None
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise VideoRejected(name, f"it is not a video PyAV can decode ({exc})") from None
    _check_length(name, probe.duration_s, limits)
    expected = probe.expected_frames(fps)
    if expected is not None and expected > limits.max_frames:
        raise VideoRejected(name, _too_many(expected, probe.duration_s or 0, fps, limits))
    return probe


def _check_length(name: str, duration: float | None, limits: VideoLimits) -> None:
    if duration is not None and duration <= 0:
        raise VideoRejected(name, "the clip is zero seconds long")
    if duration is not None and duration > limits.max_seconds:
        raise VideoRejected(
            name, f"it is {duration:.1f} s long, over the limit of {limits.max_seconds:g} s"
        )


def _too_many(frames: int, duration: float, fps: float, limits: VideoLimits) -> str:
    # Refused rather than trimmed: a silently shortened clip would reconstruct half a scene.
    lower = (limits.max_frames - 1) / duration if duration > 0 else 0
    return (
        f"sampling {duration:.1f} s at {fps:g} frame(s) a second gives {frames} frames, "
        f"over the limit of {limits.max_frames}; choose at most {lower:.2f} a second "
        "or a shorter clip"
    )


def _display_turn(frame: av.VideoFrame) -> tuple[int, bool]:
    """The clockwise quarter turn (0, 90, 180, 270) and whether a left-right mirror comes
    first, that show `frame` as its clip's display matrix (a phone's "rotate 90") says."""
    counter_clockwise = frame.rotation
    quarters = round(counter_clockwise / 90)
    if abs(counter_clockwise - 90 * quarters) > 1:
        return 0, False  # not a quarter turn, or a broken matrix: kept as stored
    turn = -90 * quarters % 360
    # PyAV's typing knows only the motion-vector side data; the matrix is nine int32s
    # {a b u, c d v, x y w}: a mirror makes the determinant a·d - b·c negative, and
    # `frame.rotation` (read from a b alone) then includes a half turn.
    side_data = cast("Mapping[str, SupportsBytes]", frame.side_data)
    matrix = side_data.get("DISPLAYMATRIX")
    if matrix is None:
        return turn, False
    a, b, _, c, d, *_ = struct.unpack("=9i", bytes(matrix))
    mirrored = a * d - b * c < 0
    return (turn + 180) % 360 if mirrored else turn, mirrored


def _upright(frame: av.VideoFrame, turn: int, mirrored: bool) -> Image.Image:
    """The frame as the camera showed it."""
    picture = Image.fromarray(frame.to_ndarray(format="rgb24"))
    if mirrored:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return picture.transpose(_CLOCKWISE[turn]) if turn else picture


def _kept_frames(
    name: str, data_or_path: bytes | Path, fps: float, limits: VideoLimits
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decode one frame at a time, yielding the first and then one each 1/fps seconds."""
    with av.open(_source(data_or_path), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start: float | None = None
        next_at = 0.0
        kept = 0
        for frame in _frames(container, stream):
            if frame.time is None:
                continue
            if start is None:
                start = frame.time
            t = frame.time - start
            if t > limits.max_seconds:
                raise VideoRejected(name, f"it runs past the limit of {limits.max_seconds:g} s")
            if t + _TIME_SLACK_S < next_at:
                continue
            kept += 1
            if kept > limits.max_frames:
                raise VideoRejected(name, _too_many(kept, t, fps, limits))
            yield t, frame
            next_at = kept / fps


def _frames(
    container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[av.VideoFrame]:
    """The stream's frames; a clip that ends before its first frame is simply empty."""
    try:
        yield from container.decode(stream)
    except av.error.EOFError:
        return


def sample_video(
    name: str, data_or_path: bytes | Path, limits: VideoLimits, fps: float = 1.0
) -> SampledVideo:
    """The clip's frames at `fps` (the first kept), each a PNG `frame_0001.png` …; all or none.

    Each frame is turned as the clip's display matrix says (a phone's portrait clip comes out
    portrait). Decoding goes frame by frame: only the kept frames' PNGs are held, never the clip.
    """
    probe = probe_video(name, data_or_path, limits, fps)
    frames: list[tuple[str, bytes]] = []
    last = 0.0
    rotation = 0
    try:
        for t, frame in _kept_frames(name, data_or_path, fps, limits):
            rotation, mirrored = _display_turn(frame)
            out = io.BytesIO()
            _upright(frame, rotation, mirrored).save(out, format="PNG")
            frames.append((f"frame_{len(frames) + 1:04d}.png", out.getvalue()))
            last = t
    except VideoRejected:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise VideoRejected(name, f"the video is damaged ({exc})") from None
    if not frames:
        raise VideoRejected(name, "the clip has no frames")
    duration = probe.duration_s if probe.duration_s is not None else last
    return SampledVideo(frames, duration, probe.clip_fps, rotation)
