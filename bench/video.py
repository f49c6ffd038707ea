"""Benchmark: sampling a clip's frames with PyAV, its speed against the clip's length and its
memory against a six times longer clip that gives as many frames."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bench.common import Figure
from vggt_core.video import VideoLimits, sample_video

TARGET_MEMORY_RATIO = 1.5
LIMITS = VideoLimits(max_bytes=2**31, max_seconds=3600, max_frames=1000)

# Run in a child so its peak RSS is this sampling's alone.
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from vggt_core.video import VideoLimits, sample_video
limits = VideoLimits(max_bytes=2**31, max_seconds=3600, max_frames=1000)
path, fps = Path(sys.argv[1]), float(sys.argv[2])
import av, numpy  # imported before the baseline: only the sampling's own memory counts
pages = int(Path("/proc/self/statm").read_text().split()[1])
before = pages * resource.getpagesize() // 1024
start = time.perf_counter()
frames = len(sample_video(path.name, path, limits, fps).frames)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": frames, "seconds": seconds, "growth_kb": peak - before}))
"""


def write_clip(path: Path, seconds: int, size: tuple[int, int], fps: int = 30) -> None:
    """An H.264 clip of moving noise (it compresses like footage, not like a flat colour)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1], size[0] * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(seconds * fps):
            shift = (i * 4) % size[0]
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(base[:, shift : shift + size[0]]), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sample_in_child(path: Path, fps: float) -> dict[str, float]:
    """Frames, seconds and peak RSS growth (kB) of sampling `path` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(fps)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run(quick: bool) -> list[Figure]:
    """Sample a short and a six times longer clip to the same frame count; time and memory."""
    size = (640, 360) if quick else (1280, 720)
    short_s = 5 if quick else 10
    workdir = Path(tempfile.mkdtemp(prefix="vggt-bench-video-"))
    try:
        short, long = workdir / "short.mp4", workdir / "long.mp4"
        write_clip(short, short_s, size)
        write_clip(long, short_s * 6, size)
        print(f"# video: clips written ({size[0]}x{size[1]})", file=sys.stderr)
        start = time.perf_counter()
        frames = len(sample_video(short.name, short, LIMITS, 1.0).frames)
        realtime = (time.perf_counter() - start) / short_s
        a = sample_in_child(short, 1.0)
        b = sample_in_child(long, 1.0 / 6)
        assert a["frames"] == b["frames"] == frames, (a, b, frames)
        ratio = b["growth_kb"] / max(a["growth_kb"], 1.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return [
        Figure(
            "video_memory_ratio",
            f"{ratio:.2f} (peak RSS growth sampling {short_s * 6} s at 1/6 fps vs {short_s} s at "
            f"1 fps, {frames} frames each, {size[0]}x{size[1]}: "
            f"{b['growth_kb'] / 1024:.0f} MB vs {a['growth_kb'] / 1024:.0f} MB)",
            f"≤ {TARGET_MEMORY_RATIO}",
            ratio <= TARGET_MEMORY_RATIO,
        ),
        Figure(
            "video_sampling_s_per_clip_s",
            f"{realtime:.3f} s of sampling per second of clip (30 fps, kept 1 a second)",
            "",
            None,
        ),
    ]
