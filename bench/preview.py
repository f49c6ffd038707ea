"""How fast and how lean a VGGT GLB turns into the 3D preview figure."""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import plotly.io as pio
import trimesh
from plotly.tools import return_figure_from_figure_or_data

from bench.common import Figure
from vggt_core.glb import DEFAULT_PREVIEW_POINTS, preview_figure, read_glb

FRAMES = 20
FULL_POINTS = 2_000_000
QUICK_POINTS = 400_000
REPEATS = 5


def build_vggt_like_glb(path: Path, points: int, frames: int = FRAMES) -> int:
    """Write a GLB shaped like a VGGT result (one POINTS cloud, a cone per camera, a node
    transform) the way VGGT's demo does, with trimesh; returns its size in bytes."""
    rng = np.random.default_rng(7)
    per_frame = points // frames
    clouds = []
    for frame in range(frames):
        count = per_frame if frame < frames - 1 else points - per_frame * (frames - 1)
        # A depth map seen by a camera that turns a little each frame.
        u = rng.uniform(-1.0, 1.0, count)
        v = rng.uniform(-0.75, 0.75, count)
        depth = 2.0 + 0.3 * np.sin(3 * u) * np.cos(2 * v) + rng.normal(0, 0.01, count)
        angle = frame * 0.05
        x = u * depth
        clouds.append(
            np.stack([x * np.cos(angle) + depth * np.sin(angle), v * depth, depth], axis=1)
        )
    vertices = np.concatenate(clouds).astype(np.float32)
    # Uniformly random colours: the worst case for the preview's palette (all 32,768 used).
    colors = rng.integers(0, 256, size=(points, 4), dtype=np.uint8)
    colors[:, 3] = 255

    scene = trimesh.Scene()
    scene.add_geometry(trimesh.PointCloud(vertices=vertices, colors=colors))
    for frame in range(frames):
        cone = trimesh.creation.cone(radius=0.03, height=0.04, sections=4)
        pose = trimesh.transformations.rotation_matrix(frame * 0.05, [0, 1, 0])
        pose[:3, 3] = [0.02 * frame, 0.0, 0.0]
        cone.apply_transform(pose)
        cone.visual.vertex_colors = [255, 80 + 8 * frame, 0, 255]
        scene.add_geometry(cone)
    # VGGT's alignment: OpenGL axes, turned 180° about y (a 180° turn about z in effect).
    align = np.diag([1.0, -1.0, -1.0, 1.0]) @ trimesh.transformations.rotation_matrix(
        np.pi, [0, 1, 0]
    )
    scene.apply_transform(align)
    data = scene.export(file_type="glb")
    path.write_bytes(data)
    return len(data)


def _prepare(path: Path, budget: int) -> object:
    """What the app does between a GLB on disk and a figure: read, sample, build."""
    return preview_figure(read_glb(path), budget=budget)


def run(quick: bool) -> list[Figure]:
    """Measure preparation time, payload ratio and peak memory ratio of the preview."""
    points = QUICK_POINTS if quick else FULL_POINTS
    # Quick runs shrink the preview budget in proportion, so the ratios keep their meaning.
    budget = DEFAULT_PREVIEW_POINTS * points // FULL_POINTS
    suffix = (
        f" (quick: {points:,} points, budget {budget:,})"
        if quick
        else f" ({points:,} points, budget {budget:,})"
    )
    with tempfile.TemporaryDirectory(prefix="bench-preview-") as folder:
        path = Path(folder) / "scene.glb"
        size = build_vggt_like_glb(path, points)
        gc.collect()

        _prepare(path, budget)  # warm imports and the page cache
        times = []
        for _ in range(REPEATS):
            gc.collect()
            start = time.perf_counter()
            fig = _prepare(path, budget)
            times.append(time.perf_counter() - start)
            del fig
        prepare_s = statistics.median(times)

        fig = _prepare(path, budget)
        start = time.perf_counter()
        # Exactly what st.plotly_chart sends (streamlit/elements/plotly_chart.py).
        spec = pio.to_json(return_figure_from_figure_or_data(fig, True), validate=False)
        serialize_s = time.perf_counter() - start
        payload = len(spec.encode())
        payload_ratio = payload / size
        del fig, spec

        gc.collect()
        tracemalloc.start()
        fig = _prepare(path, budget)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del fig
        peak_ratio = peak / size

    return [
        Figure(f"preview_prepare_s{suffix}", f"{prepare_s:.3f}", "≤ 0.3", prepare_s <= 0.3),
        Figure(
            f"preview_payload_ratio{suffix}",
            f"{payload_ratio:.3f} ({payload / 1e6:.1f} MB of {size / 1e6:.1f} MB)",
            "≤ 0.25",
            payload_ratio <= 0.25,
        ),
        Figure(
            f"preview_peak_mem_ratio{suffix} (tracemalloc peak / GLB bytes)",
            f"{peak_ratio:.2f} ({peak / 1e6:.1f} MB of {size / 1e6:.1f} MB)",
            "≤ 3",
            peak_ratio <= 3,
        ),
        Figure(f"preview_serialize_s{suffix} (info)", f"{serialize_s:.3f}", "", None),
    ]
