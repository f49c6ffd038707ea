"""Compare on the History page (AppTest, real stand-in): runs and versions side by side."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from app_fixtures import (
    HISTORY,
    button,
    open_page,
    page_text,
    plotly_figures,
    reconstructed_run,
    texts,
)

from vggt_core import RenderStatus, VGGTSettings

pytest_plugins = ["app_fixtures"]


def markdown(at) -> str:
    return "\n".join(texts(at.markdown))


def test_two_runs_and_a_version_side_by_side_with_the_differences_marked(app_env, side_executor):
    a = reconstructed_run(app_env.store, side_executor, conf_threshold=30.0)
    b = reconstructed_run(app_env.store, side_executor, conf_threshold=30.0, mask_white_bg=True)
    version = side_executor.rerender(
        a.run_id, VGGTSettings(conf_threshold=30.0, show_cameras=False)
    )
    assert side_executor.wait_render(a.run_id, version.number, 60).status is RenderStatus.completed

    at = open_page(HISTORY, compare=f"{a.run_id}@1,{b.run_id}@1,{a.run_id}@2")
    assert not at.exception
    table = markdown(at)
    assert f"{a.run_id} v1" in table and f"{a.run_id} v2" in table and f"{b.run_id} v1" in table
    assert "≠ Mask white background" in table
    assert "≠ Show cameras" in table and "≠ Cameras" in table
    assert "| Confidence threshold |" in table  # the same everywhere: not marked
    assert len(plotly_figures(at)) == 3
    assert f"| {b.run_id} v1 | {a.run_id} v1 | 3 | 0.000° / 0.000°" in table  # same cameras
    assert any("no camera cones" in c for c in texts(at.caption))

    [remove] = [x for x in at.button if x.label == "Remove" and x.key == "compare_remove_2"]
    remove.click().run()
    assert at.query_params["compare"] == f"{a.run_id}@1,{b.run_id}@1"
    assert len(plotly_figures(at)) == 2


def test_add_to_compare_from_each_run_page(app_env, side_executor):
    a = reconstructed_run(app_env.store, side_executor)
    b = reconstructed_run(app_env.store, side_executor, prediction_mode="pointmap")
    at = open_page(HISTORY, run=a.run_id)
    button(at, "Add to compare").click().run()
    assert at.query_params["compare"] == f"{a.run_id}@1"
    assert "add another run or version" in page_text(at)
    at.query_params["run"] = b.run_id
    at.run()
    button(at, "Add to compare").click().run()
    assert not at.exception
    assert at.query_params["compare"] == f"{a.run_id}@1,{b.run_id}@1"
    assert "≠ Prediction mode" in markdown(at)


def test_a_bad_link_says_so_and_changes_nothing(app_env, side_executor):
    a = reconstructed_run(app_env.store, side_executor)
    before = sorted(p.name for p in app_env.storage.rglob("*") if ".workers" not in p.parts)
    at = open_page(HISTORY, compare=f"{a.run_id}@1,../../etc@1")
    assert not at.exception
    assert any("not a run to compare" in e for e in texts(at.error))
    at = open_page(HISTORY, compare=f"{a.run_id}@1,{a.run_id}@7")
    assert any("has no version 7" in e for e in texts(at.error))
    after = sorted(p.name for p in app_env.storage.rglob("*") if ".workers" not in p.parts)
    assert after == before
