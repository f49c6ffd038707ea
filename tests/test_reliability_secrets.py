"""The HF token is sent to the backend and nowhere else: not to the storage, not to the logs,
not to the page, whether the run succeeds or fails. The backend is a local URL, so nothing
leaves the machine; the stand-in records a hash of the token it received, which proves the
token was really in play. (test_app_history checks the pages for a run made outside the app;
here the run goes through the app, and the logs and the disk are checked too.)"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("app_fixtures")

from app_fixtures import (  # noqa: E402
    HISTORY,
    NEW_RUN,
    button,
    open_page,
    page_text,
    run_until,
    upload_files,
)

from vggt_core import RunStatus, RunStore, StudioService, load_config  # noqa: E402
from vggt_core.local_space import ZEROGPU_QUOTA_ERROR, free_port  # noqa: E402

pytest_plugins = ["app_fixtures"]

TOKEN = "hf_FAKEsecretZq8Tk3vXw9LmN4pQ7rS2"
FORMS = (TOKEN, TOKEN[3:], TOKEN.encode().hex(), TOKEN[::-1])  # as is, unprefixed, hex, reversed


def leaks_in_tree(root: Path) -> list[str]:
    """Every file under `root` (links not followed) whose bytes hold the token in any form."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            data = path.read_bytes()
            found += [f"{path}: {form[:6]}…" for form in FORMS if form.encode() in data]
    return found


def leaks_in_text(text: str) -> list[str]:
    return [form[:6] + "…" for form in FORMS if form in text]


def received_token(space, since: int) -> set[str | None]:
    return {r.get("token_sha256") for r in space.received[since:]}


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, so nothing a handler could write escapes the check."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def test_runs_that_succeed_and_fail_write_the_token_nowhere(
    local_space, tmp_path, monkeypatch, debug_logs, capfd
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    config = load_config({"VGGT_BACKEND": local_space.url})
    assert config.token == TOKEN
    store = RunStore(tmp_path / "storage")
    images = [(n, d) for n, d, _ in upload_files(2)]
    since = len(local_space.received)
    executor = StudioService(config, store=store)
    runs = {}
    try:
        for case, options in [
            ("ok", {}),
            ("quota", {"error": ZEROGPU_QUOTA_ERROR}),
            ("app_error", {"error": "The model ran out of memory"}),
            ("glb_404", {"download_status": 404}),
        ]:
            run_id = store.create_run(backend=config.backend).run_id
            store.add_images(run_id, images)
            with local_space.override(**options):
                executor.start(run_id)
                runs[case] = executor.wait(run_id, timeout=60)
        assert "quota for your account" in runs["quota"].error  # the token was seen as set
        report = executor.space.check()
        assert report.ok
    finally:
        executor.close()

    unreachable = load_config({"VGGT_BACKEND": f"http://127.0.0.1:{free_port()}"})
    offline = StudioService(unreachable, store=store)
    try:
        run_id = store.create_run().run_id
        store.add_images(run_id, images)
        offline.start(run_id)
        runs["unreachable"] = offline.wait(run_id, timeout=60)
    finally:
        offline.close()

    assert runs["ok"].status is RunStatus.completed, runs["ok"].error
    assert all(r.status is RunStatus.failed for k, r in runs.items() if k != "ok")
    assert received_token(local_space, since) == {hashlib.sha256(TOKEN.encode()).hexdigest()}
    assert leaks_in_tree(store.root) == []
    assert leaks_in_text(json.dumps([r.to_json_dict() for r in runs.values()])) == []
    assert leaks_in_text(repr(config) + str(config) + repr(executor.space)) == []
    assert debug_logs.records, "nothing was logged: the log check would prove nothing"
    assert leaks_in_text(debug_logs.text) == []
    assert leaks_in_text(" ".join(str(r.__dict__) for r in debug_logs.records)) == []
    out, err = capfd.readouterr()
    assert leaks_in_text(out + err) == []


@pytest.mark.slow
def test_a_run_through_the_app_shows_and_stores_the_token_nowhere(
    app_env, monkeypatch, debug_logs, capfd
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    since = len(app_env.space.received)
    seen = []
    at = open_page(NEW_RUN)
    assert "HF token: set" in page_text(at)
    at.file_uploader[0].set_value(upload_files(2))
    at.run()
    button(at, "Reconstruct").click()
    at.run()
    assert not at.exception
    [run_id] = app_env.store.run_ids()
    run_until(at, lambda a: app_env.store.load(run_id).status is RunStatus.completed, timeout=60)
    seen.append(page_text(at))
    button(at, "Check connection").click()
    at.run()
    seen.append(page_text(at))
    seen.append(json.dumps(at.session_state.to_dict(), default=str))
    for query in ({"run": run_id}, {}):
        history = open_page(HISTORY, **query)
        assert not history.exception
        seen.append(page_text(history))
        seen.append(json.dumps(history.session_state.to_dict(), default=str))
    assert any(run_id in text for text in seen)
    assert hashlib.sha256(TOKEN.encode()).hexdigest() in received_token(app_env.space, since)
    assert all(leaks_in_text(text) == [] for text in seen)
    assert leaks_in_tree(app_env.storage) == []
    assert leaks_in_text(debug_logs.text) == []
    out, err = capfd.readouterr()
    assert leaks_in_text(out + err) == []
