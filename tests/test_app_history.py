"""AppTest of the History page: counts, filters, search, paging, deep links, actions, bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.register_assert_rewrite("app_fixtures")

from app_fixtures import (  # noqa: E402
    APP,
    HISTORY,
    NEW_RUN,
    PREVIEW_POINTS,
    button,
    camera_traces,
    make_run,
    open_page,
    page_text,
    plotly_figures,
    point_count,
    reconstructed_run,
    run_until,
    texts,
    upload_files,
)
from streamlit.testing.v1 import AppTest  # noqa: E402

from vggt_core import Attempt, RunStatus, VGGTRun  # noqa: E402

pytest_plugins = ["app_fixtures"]


def table_ids(at) -> list[str]:
    [table] = at.dataframe
    return list(table.value["Run"])


def _no_such_run(at) -> bool:
    return any("No such run" in e for e in texts(at.error))


def test_counts_filters_search_and_pages_of_25(app_env):
    store = app_env.store
    made = []
    for i in range(31):
        status = (
            RunStatus.failed if i % 5 == 0 else RunStatus.cancelled if i % 7 == 0 else None
        ) or RunStatus.completed
        images = ["kitchen_table.jpg", "b.jpg"] if i == 12 else None
        made.append(
            make_run(store, status, images=images, error="boom" if status == "failed" else None)
        )
    newest_first = [r.run_id for r in reversed(made)]
    failed = [r.run_id for r in reversed(made) if r.status is RunStatus.failed]

    at = open_page(HISTORY)
    counts = {m.label: m.value for m in at.metric}
    assert counts["All runs"] == "31"
    assert counts["Failed"] == str(len(failed))
    assert int(counts["Completed"]) + int(counts["Failed"]) + int(counts["Cancelled"]) == 31

    assert table_ids(at) == newest_first[:25]
    assert at.pagination[0].num_pages == 2
    at.pagination[0].set_value(2)
    at.run()
    assert table_ids(at) == newest_first[25:]

    at.pills(key="vs_status_filter").set_value("failed")
    at.run()
    assert table_ids(at) == failed
    assert not at.pagination  # one page only
    assert all("Failed" in s for s in at.dataframe[0].value["Status"])

    at.pills(key="vs_status_filter").set_value("all")
    at.text_input(key="vs_search").input("KITCHEN")
    at.run()
    assert table_ids(at) == [made[12].run_id]

    at.text_input(key="vs_search").input(made[3].run_id[-6:])
    at.run()
    assert table_ids(at) == [made[3].run_id]

    at.text_input(key="vs_search").input("no-such-thing")
    at.run()
    assert not at.dataframe
    assert any("No run matches" in i for i in texts(at.info))


def test_picking_a_row_opens_the_run(app_env):
    runs = [make_run(app_env.store, RunStatus.failed, error="The Space's queue is full.")]
    runs.append(make_run(app_env.store))
    at = open_page(HISTORY)
    table = at.dataframe[0]
    # What the browser sends when the user clicks the second row.
    at.session_state[table.key] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert at.query_params.get("run") == runs[0].run_id
    assert any(runs[0].run_id in s.value for s in at.subheader)
    assert any("queue is full" in e for e in texts(at.error))


def test_deep_link_shows_everything_and_delete_asks_first(app_env, side_executor):
    run = reconstructed_run(app_env.store, side_executor, conf_threshold=25.0)
    assert run.status is RunStatus.completed
    at = open_page(HISTORY, run=run.run_id)
    assert not at.exception
    assert any(run.run_id in s.value for s in at.subheader)
    text = page_text(at)
    for word in ("Confidence threshold", "25 (percentile)", "Requested", "Started", "Duration"):
        assert word in text
    assert "Sent" in text  # the upload saving
    [figure] = plotly_figures(at)
    assert 0 < point_count(figure) <= PREVIEW_POINTS
    assert camera_traces(figure)
    assert {"Download GLB", "Download PLY"} <= {d.label for d in at.download_button}
    assert len(at.image) == 3  # thumbnails of the stored images

    button(at, "Delete").click()
    at.run()
    assert app_env.store.run_dir(run.run_id).exists()  # not yet: it asks first
    assert any("cannot be undone" in w for w in texts(at.warning))
    button(at, "Yes, delete it").click()
    at.run()
    assert not at.exception
    assert not app_env.store.run_dir(run.run_id).exists()
    assert any("Deleted" in s for s in texts(at.success))
    assert "run" not in at.query_params


def test_retry_of_a_failed_run_completes(app_env, side_executor):
    with app_env.space.override(error="The model ran out of memory", fail_times=1):
        run = reconstructed_run(app_env.store, side_executor)
        assert run.status is RunStatus.failed
        at = open_page(HISTORY, run=run.run_id)
        assert any("ran out of memory" in e for e in texts(at.error))
        assert not [b for b in at.button if b.label == "Cancel"]
        button(at, "Retry").click()
        at.run()
        assert not at.exception
        run_until(at, lambda a: app_env.store.load(run.run_id).status is RunStatus.completed)
        run_until(at, lambda a: bool(plotly_figures(a)))
    assert app_env.store.load(run.run_id).error is None
    assert "Completed" in page_text(at)


def test_cancel_an_active_run_and_delete_is_refused_while_it_runs(app_env):
    with app_env.space.override(delay=3.0, progress_steps=6):
        at = open_page(NEW_RUN)
        at.file_uploader[0].set_value(upload_files(2))
        at.run()
        button(at, "Reconstruct").click()
        at.run()
        [run_id] = app_env.store.run_ids()

        at = open_page(HISTORY, run=run_id)
        run_until(
            at,
            lambda a: (
                app_env.store.load(run_id).status is RunStatus.processing and bool(a.progress)
            ),
            timeout=60,
        )
        text = page_text(at)
        assert "Elapsed" in text
        assert "Reconstructing (stand-in)" in text  # the backend's last message
        assert button(at, "Delete").disabled
        button(at, "Cancel").click()
        at.run()
        run_until(at, lambda a: app_env.store.load(run_id).status is RunStatus.cancelled)
        run_until(at, lambda a: any(b.label == "Retry" for b in a.button))
    assert not [b for b in at.button if b.label == "Cancel"]
    assert not button(at, "Delete").disabled


@pytest.mark.parametrize("value", ["../../etc", "run_1700000000000_abcdef", "", "run_../x"])
def test_a_bad_or_unknown_run_link_says_no_such_run(app_env, value):
    make_run(app_env.store)

    # The app's service announces itself in .workers/ (its heartbeat): not a run's file.
    def names() -> list[str]:
        found = app_env.storage.rglob("*")
        return sorted(
            p.name for p in found if ".workers" not in p.relative_to(app_env.storage).parts
        )

    before = names()
    at = open_page(HISTORY, run=value)
    assert not at.exception
    assert _no_such_run(at)
    assert names() == before


def test_a_corrupt_glb_shows_a_message_not_a_traceback(app_env):
    run = make_run(app_env.store)
    app_env.store.artifact_path(run.run_id, "glb").write_bytes(b"glTF" + b"\x02\0\0\0" * 3)
    buffer = io.BytesIO()
    np.savez(buffer, depth=np.zeros((1, 14, 14, 1), dtype=np.float32))
    app_env.store.save_artifact(run.run_id, "predictions", buffer.getvalue())
    at = open_page(HISTORY, run=run.run_id)
    assert not at.exception
    assert any("cannot be shown" in w for w in texts(at.warning))
    assert not plotly_figures(at)
    labels = {d.label for d in at.download_button}
    assert {"Download GLB", "Download predictions.npz"} <= labels  # the files are still theirs
    assert "Download PLY" not in labels  # cannot be made from a corrupt GLB


def test_a_broken_run_is_named_and_can_be_deleted(app_env):
    good = make_run(app_env.store)
    broken = make_run(app_env.store)
    (app_env.store.run_dir(broken.run_id) / "metadata.json").write_text("{not json")
    at = open_page(HISTORY)
    assert table_ids(at) == [broken.run_id, good.run_id]
    statuses = list(at.dataframe[0].value["Status"])
    assert "Broken" in statuses[0]
    assert "damaged" in " ".join(str(n) for n in at.dataframe[0].value["Note"])

    at.query_params["run"] = broken.run_id
    at.run()
    assert not at.exception
    assert any("cannot be read" in e for e in texts(at.error))
    button(at, "Delete").click()
    at.run()
    button(at, "Yes, delete it").click()
    at.run()
    assert not app_env.store.run_dir(broken.run_id).exists()
    assert app_env.store.run_ids() == [good.run_id]


def test_a_run_folder_without_metadata_is_named_not_hidden(app_env):
    good = make_run(app_env.store)
    orphan = "run_1999999999999_orphan"
    (app_env.store.runs_dir / orphan / "images").mkdir(parents=True)
    at = open_page(HISTORY)
    assert table_ids(at) == [orphan, good.run_id]
    table = at.dataframe[0].value
    assert list(table["Status"]) == ["Broken", "Completed"]
    assert table["Note"][0] == "metadata.json is missing"
    at.query_params["run"] = orphan
    at.run()
    assert not at.exception
    assert any("metadata.json is missing" in e for e in texts(at.error))


def test_the_token_never_reaches_the_page(app_env, monkeypatch, side_executor):
    secret = "hf_secret_Zq8Tk3vXw9"
    monkeypatch.setenv("HF_TOKEN", secret)
    run = reconstructed_run(app_env.store, side_executor)
    failed = make_run(app_env.store, RunStatus.failed, error="quota")
    seen = []
    at = open_page(NEW_RUN)
    seen.append(page_text(at))
    assert "HF token: set" in seen[-1]
    button(at, "Check connection").click()
    at.run()
    seen.append(page_text(at))
    at.file_uploader[0].set_value(upload_files(1))
    at.run()
    button(at, "Reconstruct").click()
    at.run()
    seen.append(page_text(at))
    for run_id in (run.run_id, failed.run_id, None):
        at = open_page(HISTORY, **({"run": run_id} if run_id else {}))
        seen.append(page_text(at))
        seen.append(json.dumps(at.session_state.to_dict(), default=str))
    assert all(secret not in text for text in seen)
    assert all(secret[3:] not in text for text in seen)


def test_cold_start_on_history_still_runs_app_py(monkeypatch, tmp_path, local_space):
    # No navigation_assumed(): Streamlit runs pages/history.py on its own first; the page's guard
    # must bring back app.py's sidebar.
    monkeypatch.setenv("VGGT_BACKEND", local_space.url)
    monkeypatch.setenv("VGGT_STORAGE_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page(HISTORY).run()
    assert not at.exception
    assert "Storage" in page_text(at.sidebar)
    assert [t.value for t in at.title] == ["History"]


def test_retry_under_a_status_filter_keeps_the_chosen_run(app_env):
    def failed_run(error: str) -> VGGTRun:
        files = [(n, data) for n, data, _ in upload_files(2)]
        run = app_env.store.create_run(images=files)

        def fail(r: VGGTRun) -> None:
            r.status, r.error, r.attempt = RunStatus.failed, error, 1

        return app_env.store.update(run.run_id, fail)

    first = failed_run("first failure")
    second = failed_run("second failure")
    at = open_page(HISTORY)
    at.session_state["vs_status_filter"] = "failed"
    at.run()
    table = at.dataframe[0]
    assert list(table.value["Run"]) == [second.run_id, first.run_id]
    at.session_state[table.key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert at.query_params.get("run") == second.run_id
    button(at, "Retry").click()
    at.run()
    assert not at.exception
    # The retried run left the filtered list; the page still shows it, and says so.
    assert at.query_params.get("run") == second.run_id
    assert any(second.run_id in s.value for s in at.subheader)
    assert any(f"Started {second.run_id} again" in s for s in texts(at.success))
    at.run()
    assert at.query_params.get("run") == second.run_id
    assert app_env.store.load(first.run_id).status is RunStatus.failed  # never touched


def test_a_retried_run_keeps_its_earlier_attempts(app_env):
    run = app_env.store.create_run(images=[(n, d) for n, d, _ in upload_files(2)])

    def failed_twice(r: VGGTRun) -> None:
        r.status, r.error, r.attempt = RunStatus.failed, "second: the Space's queue is full", 2
        r.attempts = [
            Attempt(number=1, status=RunStatus.failed, reached=RunStatus.processing, error="GPU")
        ]

    app_env.store.update(run.run_id, failed_twice)
    at = open_page(HISTORY, run=run.run_id)
    text = page_text(at)
    assert "Earlier attempts" in text and "this is attempt 2" in text
    assert "GPU" in text and "processing" in text
