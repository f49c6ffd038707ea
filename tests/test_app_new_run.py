"""AppTest of app.py and the New run page: upload, settings, reconstruct, follow, bad input."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("app_fixtures")

from app_fixtures import (  # noqa: E402
    NEW_RUN,
    PREVIEW_POINTS,
    button,
    camera_traces,
    open_page,
    page_text,
    plotly_figures,
    point_count,
    run_until,
    texts,
    upload_files,
)
from helpers_images import jpeg_bytes  # noqa: E402

from vggt_core import RunProgress, RunStatus  # noqa: E402
from vggt_core.models import utc_now  # noqa: E402

pytest_plugins = ["app_fixtures"]


def _completed(at) -> bool:
    return any("Completed" in m for m in texts(at.markdown)) and not any(
        b.label == "Cancel" for b in at.button
    )


def test_sidebar_shows_backend_storage_and_no_token(app_env):
    at = open_page(NEW_RUN)
    sidebar = page_text(at.sidebar)
    assert app_env.space.url in sidebar
    assert str(app_env.storage.resolve()) in sidebar
    assert "0 runs" in sidebar
    assert "HF token: not set" in sidebar
    button(at, "Check connection").click()
    at.run()
    assert not at.exception
    assert any("serves the VGGT API" in s for s in texts(at.sidebar.success))


def test_reconstruct_with_every_setting_changed_then_a_second_run(app_env):
    at = open_page(NEW_RUN)
    assert button(at, "Reconstruct").disabled  # nothing uploaded yet
    at.file_uploader[0].set_value(upload_files(3))
    at.run()
    assert not at.error
    assert len(at.image) == 3
    captions = [c for image in at.image for c in image.captions]
    assert [c.split(" · ")[0] for c in captions] == ["view_00.jpg", "view_01.png", "view_02.jpg"]
    assert all(c.endswith(" kB") for c in captions)  # each thumbnail says its size

    at.slider(key="vs_conf").set_value(72)
    at.radio(key="vs_mode").set_value("pointmap")
    at.checkbox(key="vs_mask_black").check()
    at.checkbox(key="vs_mask_white").check()
    at.checkbox(key="vs_mask_sky").check()
    at.checkbox(key="vs_show_cams").uncheck()
    at.toggle(key="vs_presize").set_value(False)
    at.run()
    reconstruct = button(at, "Reconstruct")
    assert not reconstruct.disabled
    reconstruct.click()
    at.run()
    assert not at.exception
    assert any("Started run" in s for s in texts(at.success))

    [first_id] = app_env.store.run_ids()
    run_until(at, _completed, timeout=60)

    run = app_env.store.load(first_id)
    assert run.status is RunStatus.completed
    stored = run.settings
    assert stored.conf_threshold == 72
    assert stored.prediction_mode == "pointmap"
    assert (stored.mask_black_bg, stored.mask_white_bg, stored.mask_sky) == (True, True, True)
    assert stored.show_cameras is False
    assert run.presize is False
    assert run.backend == app_env.space.url
    assert len(run.images) == 3
    # What the stand-in received is what the widgets said.
    call = [r for r in app_env.space.received if r["endpoint"] == "/gradio_demo"][-1]["params"]
    assert call["conf_thres"] == 72
    assert call["prediction_mode"] == "Pointmap Branch"
    assert call["show_cam"] is False

    [figure] = plotly_figures(at)
    assert 0 < point_count(figure) <= PREVIEW_POINTS
    assert not camera_traces(figure)  # cameras were switched off
    assert figure["layout"]["title"]["text"].startswith(f"Showing {PREVIEW_POINTS:,} of ")
    assert "Download GLB" in [d.label for d in at.download_button]
    assert any(link.proto.query_string == f"run={first_id}" for link in at.get("page_link"))

    # A second run, cameras back on: the uploader was emptied, the settings were kept.
    assert not at.image
    at.checkbox(key="vs_show_cams").check()
    at.file_uploader[0].set_value(upload_files(2))
    at.run()
    button(at, "Reconstruct").click()
    at.run()
    second_id = next(i for i in app_env.store.run_ids() if i != first_id)
    run_until(at, lambda a: app_env.store.load(second_id).status is RunStatus.completed)
    run_until(at, _completed)
    second = app_env.store.load(second_id)
    assert second.settings.show_cameras is True
    assert second.settings.conf_threshold == 72

    figures = plotly_figures(at)
    assert len(figures) == 1  # only the newest result is drawn; older ones on request
    assert camera_traces(figures[0])
    assert 0 < point_count(figures[0]) <= PREVIEW_POINTS
    # Both runs of this session are listed, newest first.
    headers = [m for m in texts(at.markdown) if m.startswith("**`run_")]
    assert headers == [f"**`{second_id}`**", f"**`{first_id}`**"]


def test_a_text_file_named_jpg_is_refused_and_creates_no_run(app_env):
    at = open_page(NEW_RUN)
    at.file_uploader[0].set_value(("notes.jpg", b"these are my notes, not a photo\n", "image/jpeg"))
    at.run()
    assert not at.exception
    errors = texts(at.error)
    assert any("notes.jpg" in e and "not an image" in e for e in errors), errors
    assert button(at, "Reconstruct").disabled
    assert app_env.store.run_ids() == []


def test_each_refused_file_gets_its_own_message(app_env, monkeypatch):
    monkeypatch.setenv("VGGT_MAX_IMAGES", "2")
    monkeypatch.setenv("VGGT_MAX_IMAGE_BYTES", "20000")
    at = open_page(NEW_RUN)
    files = [
        ("a.jpg", jpeg_bytes(64, 48, seed=1), "image/jpeg"),
        ("huge.jpg", jpeg_bytes(640, 480, seed=2), "image/jpeg"),
        ("b.jpg", jpeg_bytes(64, 48, seed=3), "image/jpeg"),
        ("c.jpg", jpeg_bytes(64, 48, seed=4), "image/jpeg"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png"),
    ]
    assert len(files[1][1]) > 20000
    at.file_uploader[0].set_value(files)
    at.run()
    errors = texts(at.error)
    assert len(errors) == 3, errors
    assert any("huge.jpg" in e and "over the limit" in e for e in errors)
    assert any("c.jpg" in e and "too many files" in e for e in errors)
    assert any("broken.png" in e for e in errors)
    # The two good ones can still go.
    assert len(at.image) == 2
    button(at, "Reconstruct").click()
    at.run()
    [run_id] = app_env.store.run_ids()
    assert app_env.store.load(run_id).images == ["a.jpg", "b.jpg"]
    run_until(at, lambda a: not app_env.store.load(run_id).is_active)


def test_secrets_take_precedence_over_the_environment(app_env):
    at = open_page(NEW_RUN)
    at.secrets["VGGT_BACKEND"] = "someone/vggt-copy"
    at.run()
    assert not at.exception
    sidebar = page_text(at.sidebar)
    assert "someone/vggt-copy" in sidebar
    assert app_env.space.url not in sidebar


def test_a_failed_run_says_why_in_plain_words_and_retry_completes_it(app_env):
    quota = "You have exceeded your GPU quota (60s requested vs. 0s left). Try again in 0:09:48"
    with app_env.space.override(error=quota, fail_times=1):
        at = open_page(NEW_RUN)
        at.file_uploader[0].set_value(upload_files(2))
        at.run()
        button(at, "Reconstruct").click()
        at.run()
        [run_id] = app_env.store.run_ids()
        run_until(at, lambda a: any(b.label == "Retry" for b in a.button))
        errors = texts(at.error)
        assert any("GPU quota" in e and "add an HF token" in e for e in errors), errors
        assert app_env.store.load(run_id).status is RunStatus.failed
        button(at, "Retry").click()
        at.run()
        run_until(at, _completed)
    assert app_env.store.load(run_id).status is RunStatus.completed
    assert "Download GLB" in [d.label for d in at.download_button]


def test_every_active_run_is_shown_with_the_space_queue_and_its_eta(app_env):
    # A run started elsewhere (another tab, a script): held by a live worker, waiting in the
    # Space's own queue. A reload (a fresh session) must still show it, above the uploader.
    run = app_env.store.create_run(images=[(n, d) for n, d, _ in upload_files(2)])

    def in_space_queue(r):
        r.status, r.attempt = RunStatus.processing, 1
        r.submitted_at = r.started_at = utc_now()
        r.progress = RunProgress(rank=2, queue_size=5, eta=42.0, message="In queue")

    app_env.store.update(run.run_id, in_space_queue)
    claim = app_env.store.claim(run.run_id)  # as its worker would hold it
    try:
        at = open_page(NEW_RUN)
        text = page_text(at)
        assert run.run_id in text
        assert text.index(run.run_id) < text.index("1 · Photos")
        panel = "\n".join(texts(at.markdown))
        assert "Waiting in the Space's queue (position 3 of 5)." in panel
        assert "About 42 s until it starts (the Space's estimate)." in panel
        assert any(b.label == "Cancel" for b in at.button)
    finally:
        assert claim is not None
        claim.release()
