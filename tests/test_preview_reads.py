"""The run's 3D preview and its downloads read the GLB file once, not once each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

pytest.register_assert_rewrite("app_fixtures")

from app_fixtures import HISTORY, make_run, open_page, plotly_figures  # noqa: E402

pytest_plugins = ["app_fixtures"]


def bytes_read() -> int:
    """Bytes this process has read through system calls so far (/proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def point_cloud_glb(points: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    cloud = trimesh.PointCloud(
        rng.normal(size=(points, 3)).astype(np.float32),
        colors=rng.integers(0, 255, (points, 4), dtype=np.uint8),
    )
    return trimesh.Scene([cloud]).export(file_type="glb")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io")
def test_first_view_of_a_run_reads_its_glb_once(app_env):
    warm = make_run(app_env.store)
    app_env.store.save_artifact(warm.run_id, "glb", point_cloud_glb(1_000, 1))
    assert plotly_figures(open_page(HISTORY, run=warm.run_id))  # imports and caches warmed up

    run = make_run(app_env.store)
    glb = point_cloud_glb(600_000, 2)
    app_env.store.save_artifact(run.run_id, "glb", glb)
    before = bytes_read()
    at = open_page(HISTORY, run=run.run_id)
    read = bytes_read() - before
    assert not at.exception
    assert plotly_figures(at)
    assert "Download PLY" in {d.label for d in at.download_button}
    # One read plus the page's other reads (about 5 MB here); reading it twice passes 2×.
    assert len(glb) <= read < 2 * len(glb), f"read {read:,} bytes for a GLB of {len(glb):,}"
