"""The 3D preview of a 2M-point VGGT GLB as the app draws it: server time on first view and on
an unrelated rerun, the chart's size and escaping, and the memory it takes."""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import trimesh
from streamlit.testing.v1 import AppTest

from bench.common import Figure
from vggt_core import RunStatus, StudioService, VGGTRun, load_config
from vggt_core.glb import DEFAULT_PREVIEW_POINTS, preview_spec, read_glb

FRAMES = 20
POINTS = 2_000_000
FIRST_VIEWS = 5  # quick: 3
RERUNS = 9  # quick: 5


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


def _page(storage: str, run_id: str, budget: int) -> None:
    """The app's preview() in a page of its own, timing itself into session state."""
    # AppTest runs this function's body alone: it imports what it uses.
    from time import perf_counter

    import streamlit as st

    import ui.preview
    from vggt_core import StudioService, load_config

    service = StudioService(load_config({"VGGT_STORAGE_DIR": storage}), workers=False)
    run = service.get(run_id)
    start = perf_counter()
    ui.preview.preview(service, run, budget, key="bench_preview")
    st.session_state.setdefault("times", []).append(perf_counter() - start)
    service.close()


def _views(storage: Path, run_id: str, budget: int, reruns: int) -> tuple[float, list[float], str]:
    """One first view (preview caches cleared) then `reruns` reruns: (first s, rerun s, spec)."""
    import ui.preview

    ui.preview._draw.clear()
    at = AppTest.from_function(_page, args=(str(storage), run_id, budget), default_timeout=120)
    at.run()
    for _ in range(reruns):
        at.run()
    if at.exception:
        raise RuntimeError(at.exception[0].message)
    times = at.session_state["times"]
    return times[0], times[1:], at.get("plotly_chart")[0].proto.spec


def run(quick: bool) -> list[Figure]:
    """Preview server time (first view, rerun), chart size and escaping, peak memory."""
    budget = DEFAULT_PREVIEW_POINTS
    first_views = 3 if quick else FIRST_VIEWS
    suffix = f" ({POINTS:,} points, budget {budget:,})"
    with tempfile.TemporaryDirectory(prefix="bench-preview-") as folder:
        storage = Path(folder) / "storage"
        service = StudioService(load_config({"VGGT_STORAGE_DIR": str(storage)}), workers=False)
        run_id = service.create_run().run_id

        def completed(run: VGGTRun) -> None:
            run.status = RunStatus.completed
            run.images = ["a.jpg", "b.jpg"]
            run.submitted_at = run.started_at = run.finished_at = run.requested_at

        # A data generator, as history's: a completed run and its GLB written straight to disk.
        service.store.update(run_id, completed)
        glb = service.store.artifact_path(run_id, "glb")
        size = build_vggt_like_glb(glb, POINTS)
        service.close()

        _views(storage, run_id, budget, 1)  # imports warmed up, page cache filled
        firsts, reruns = [], []
        spec = ""
        for _ in range(first_views):
            gc.collect()
            first, again, spec = _views(storage, run_id, budget, RERUNS if not quick else 5)
            firsts.append(first)
            reruns.extend(again)
        first_s = statistics.median(firsts)
        rerun_s = statistics.median(reruns)
        payload = len(spec.encode())
        escaped = spec.count("\\u002f")
        escaped_share = escaped * 6 / payload
        shown = json.loads(spec)["layout"]["meta"]["shown_points"]

        gc.collect()
        tracemalloc.start()
        built = preview_spec(read_glb(glb), budget=budget, grid=4096)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del built

    payload_ratio = payload / size
    peak_ratio = peak / size
    return [
        Figure(
            f"preview_first_view_s{suffix} (server time of preview(), AppTest, median of "
            f"{first_views})",
            f"{first_s:.3f}",
            "≤ 0.3",
            first_s <= 0.3,
        ),
        Figure(
            f"preview_rerun_s{suffix} (an unrelated rerun, median of {len(reruns)})",
            f"{rerun_s:.4f}",
            "≤ 0.01",
            rerun_s <= 0.01,
        ),
        Figure(
            f"preview_escaped_share{suffix} (\\u002f escapes in the chart, binary arrays)",
            f"{escaped_share:.3f} ({escaped:,} escapes; {payload / max(shown, 1):.1f} bytes a "
            "point in all)",
            "≤ 0.05",
            escaped_share <= 0.05,
        ),
        Figure(
            f"preview_payload_ratio{suffix}",
            f"{payload_ratio:.3f} ({payload / 1e6:.2f} MB of {size / 1e6:.1f} MB)",
            "≤ 0.25",
            payload_ratio <= 0.25,
        ),
        Figure(
            f"preview_peak_mem_ratio{suffix} (tracemalloc peak of read + build / GLB bytes)",
            f"{peak_ratio:.2f} ({peak / 1e6:.1f} MB of {size / 1e6:.1f} MB)",
            "≤ 3",
            peak_ratio <= 3,
        ),
    ]
