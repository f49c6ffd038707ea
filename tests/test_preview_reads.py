"""The run's 3D preview and its downloads read the GLB file once, not once each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.io
import pytest
import trimesh

pytest.register_assert_rewrite("app_fixtures")

from app_fixtures import (  # noqa: E402
    HISTORY,
    array_length,
    array_values,
    make_run,
    open_page,
    plotly_figures,
)

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


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io")
def test_a_rerun_of_an_open_preview_neither_reads_nor_rebuilds_it(app_env, monkeypatch):
    serialised: list[int] = []
    to_json = plotly.io.to_json

    def counting_to_json(*args: Any, **kwargs: Any) -> str:
        serialised.append(1)
        return to_json(*args, **kwargs)

    monkeypatch.setattr(plotly.io, "to_json", counting_to_json)
    run = make_run(app_env.store)
    glb = point_cloud_glb(400_000, 3)
    app_env.store.save_artifact(run.run_id, "glb", glb)
    at = open_page(HISTORY, run=run.run_id)
    first = at.get("plotly_chart")[0].proto.spec
    assert serialised == [1]
    before = bytes_read()
    at.run()  # an unrelated rerun, as any click elsewhere on the page makes
    read = bytes_read() - before
    assert not at.exception
    assert at.get("plotly_chart")[0].proto.spec == first  # the same chart, replayed
    assert serialised == [1], "the rerun serialised the chart again"
    assert read < len(glb) // 4, f"a rerun read {read:,} bytes (GLB {len(glb):,})"


def test_the_chart_is_compact_and_says_what_it_shows(app_env):
    # Every rerun sends the chart again: positions and colours go as binary (2 bytes a value,
    # base64), not as decimal text, and plotly's escaping of "/" adds little to them.
    run = make_run(app_env.store)
    points = 300_000
    app_env.store.save_artifact(run.run_id, "glb", point_cloud_glb(points, 4))
    at = open_page(HISTORY, run=run.run_id)
    spec_text = at.get("plotly_chart")[0].proto.spec
    (figure,) = plotly_figures(at)
    meta = figure["layout"]["meta"]
    shown = meta["shown_points"]
    assert 0 < shown < points and meta["total_points"] == points
    trace = figure["data"][0]
    arrays = [trace["x"], trace["y"], trace["z"], trace["marker"]["color"]]
    assert {a["dtype"] for a in arrays} == {"u2"}
    assert all(len(a["bdata"]) <= 2.7 * shown for a in arrays)  # 4/3 of 2 bytes a value
    assert spec_text.count("\\u002f") * 5 <= 0.05 * len(spec_text)
    x = array_values(trace["x"])
    assert len(x) == array_length(trace["marker"]["color"]) == shown
    assert x.min() >= 0 and x.max() <= 4096
    assert f"A sample of {shown:,} of the {points:,} points" in " ".join(
        c.value for c in at.caption
    )
