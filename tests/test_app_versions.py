"""The version picker and the re-render form on the History page (AppTest, real stand-in)."""

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
    point_count,
    reconstructed_run,
    run_until,
    texts,
)

from vggt_core import RenderStatus, RunStatus, VGGTSettings

pytest_plugins = ["app_fixtures"]


def picker(at):
    [select] = [s for s in at.selectbox if s.label == "Version"]
    return select


def download_names(at) -> str:
    """The download buttons' protobufs (their ids carry the version shown)."""
    return "\n".join(str(d.proto) for d in at.download_button)


def test_versions_are_listed_newest_first_and_the_preview_follows_the_choice(
    app_env, side_executor
):
    run = reconstructed_run(app_env.store, side_executor)
    rid = run.run_id
    for conf in (5.0, 95.0):
        version = side_executor.rerender(rid, VGGTSettings(conf_threshold=conf))
        done = side_executor.wait_render(rid, version.number, timeout=60)
        assert done.status is RenderStatus.completed, done.error
    points = {v.number: v.points for v in side_executor.get(rid).versions}

    at = open_page(HISTORY, run=rid)
    assert not at.exception
    select = picker(at)
    assert select.options == [
        "v3 · conf 95 · depth · " + f"{points[3]:,} points",
        *select.options[1:],
    ]
    assert [o.split(" · ")[0] for o in select.options] == ["v3", "v2", "v1"]
    assert select.value == 3
    assert f"dl_glb_{rid}_v3" in download_names(at)
    assert "Versions" in page_text(at)

    picker(at).set_value(1).run()
    assert not at.exception
    assert f"dl_glb_{rid}_v1" in download_names(at) and "_v3" not in download_names(at)
    assert "5 (percentile)" not in page_text(at)  # v1's settings are shown
    picker(at).set_value(2).run()
    assert "(version 2)" in page_text(at) and "5 (percentile)" in page_text(at)
    [figure] = plotly_figures(at)
    assert point_count(figure) == min(points[2], 20_000)


def test_the_form_re_renders_as_a_new_version(app_env, side_executor):
    run = reconstructed_run(app_env.store, side_executor)
    rid = run.run_id
    at = open_page(HISTORY, run=rid)
    [slider] = [s for s in at.slider if s.label == "Confidence threshold (percentile)"]
    slider.set_value(20)
    [cams] = [c for c in at.checkbox if c.label == "Show cameras"]
    cams.uncheck()
    button(at, "Re-render").click()
    at.run()
    assert not at.exception
    run_until(
        at,
        lambda a: (
            app_env.store.load(rid).version(2) is not None
            and app_env.store.load(rid).version(2).status is RenderStatus.completed
        ),
    )
    version = app_env.store.load(rid).version(2)
    assert version.settings == VGGTSettings(conf_threshold=20.0, show_cameras=False)
    at.run()
    assert picker(at).value == 2


def test_a_forgotten_run_offers_a_linked_re_run(app_env, side_executor):
    run = reconstructed_run(app_env.store, side_executor)
    rid = run.run_id
    with app_env.space.override(forget=True):
        version = side_executor.rerender(rid, VGGTSettings(conf_threshold=30.0))
        side_executor.wait_render(rid, version.number, timeout=60)
    at = open_page(HISTORY, run=rid)
    assert any("no longer holds" in w for w in texts(at.warning))
    button(at, "Re-run with these settings").click()
    at.run()
    assert not at.exception
    children = [r for r in app_env.store.list_runs(limit=10).runs if r.parent_run_id == rid]
    assert len(children) == 1 and children[0].settings.conf_threshold == 30.0
    child = side_executor.wait(children[0].run_id, timeout=120)
    assert child.status is RunStatus.completed, child.error
    at.run()
    assert f"Re-run of {rid}" in page_text(at)


def test_exports_are_prepared_then_downloaded(app_env, side_executor):
    run = reconstructed_run(app_env.store, side_executor)
    at = open_page(HISTORY, run=run.run_id)
    [fmt] = [s for s in at.selectbox if s.label == "Format"]
    fmt.set_value("colmap").run()
    button(at, "Prepare").click().run()
    assert not at.exception
    assert "Download v1_colmap.zip" in {d.label for d in at.download_button}
    assert (app_env.store.run_dir(run.run_id) / "exports" / "v1_colmap.zip").is_file()


def test_an_export_without_cameras_offers_the_re_render_that_brings_them(app_env, side_executor):
    run = reconstructed_run(app_env.store, side_executor, show_cameras=False)
    at = open_page(HISTORY, run=run.run_id)
    [fmt] = [s for s in at.selectbox if s.label == "Format"]
    fmt.set_value("cameras").run()
    button(at, "Prepare").click().run()
    assert any("re-render it with cameras on" in e for e in texts(at.error))
    button(at, "Re-render with cameras on").click().run()
    assert not at.exception
    version = app_env.store.load(run.run_id).version(2)
    assert version is not None and version.settings.show_cameras
