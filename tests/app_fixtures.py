"""Fixtures and helpers for the AppTest tests of the pages (app.py, New run, History)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_images import jpeg_bytes, png_bytes
from streamlit.testing.v1 import AppTest

from ui.entrypoint import navigation_assumed
from vggt_core import RunStatus, RunStore, StudioService, VGGTRun, VGGTSettings, load_config
from vggt_core.local_space import LocalSpace

APP = Path(__file__).resolve().parents[1] / "app.py"
NEW_RUN = "pages/new_run.py"
HISTORY = "pages/history.py"
TIMEOUT = 60  # AppTest's limit on one script run: generous for a loaded machine
PREVIEW_POINTS = 20_000


@dataclass
class AppEnv:
    """What a page test works with: the stand-in Space, the storage the app uses, a store on it."""

    space: LocalSpace
    storage: Path
    store: RunStore


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, local_space: LocalSpace
) -> Iterator[AppEnv]:
    """The app configured through the environment: the local stand-in, a fresh storage folder."""
    storage = tmp_path / "storage"
    monkeypatch.setenv("VGGT_BACKEND", local_space.url)
    monkeypatch.setenv("VGGT_STORAGE_DIR", str(storage))
    monkeypatch.setenv("VGGT_PREVIEW_POINTS", str(PREVIEW_POINTS))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # Every AppTest run as a server runs once app.py has called st.navigation (the cold start
    # has its own test).
    with navigation_assumed():
        yield AppEnv(local_space, storage, RunStore(storage))


@pytest.fixture
def side_executor(app_env: AppEnv) -> Iterator[StudioService]:
    """A test-side executor on the app's storage, to prepare runs through the real pipeline."""
    ex = StudioService(load_config(), store=app_env.store)
    yield ex
    ex.close()


def open_page(page: str, **query: str) -> AppTest:
    """The app started at app.py, then switched to `page` (with query parameters) and run."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    at.query_params.update(query)
    at.switch_page(page)
    at.run()
    return at


def run_until(at: AppTest, done: Callable[[AppTest], bool], timeout: float = 60) -> AppTest:
    """Rerun the app (as the fragments' timers would) until `done(at)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s:\n{page_text(at)[:3000]}")
        time.sleep(0.25)


def button(at: AppTest, label: str) -> Any:
    """The one button with this label (fails when there is none or several)."""
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, (
        f"{len(found)} buttons labelled {label!r}: {[b.label for b in at.button]}"
    )
    return found[0]


def texts(elements: Any) -> list[str]:
    """The values of a list of text-like elements, markdown escapes removed."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def page_text(at: Any) -> str:
    """Every element's protobuf as text, of an AppTest (main area and sidebar) or one block."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree if isinstance(at, AppTest) else at)
    return "\n".join(parts)


def plotly_figures(at: AppTest) -> list[dict[str, Any]]:
    """The figures of every plotly chart on the page, as JSON."""
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def array_values(values: Any) -> np.ndarray:
    """A plotly data array's values, plain list or base64 typed array (as plotly.js reads it)."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=f"<{values['dtype']}")
    return np.asarray(values)


def array_length(values: Any) -> int:
    """How many values a plotly data array holds, plain list or base64 typed array."""
    return len(array_values(values))


def point_count(figure: dict[str, Any]) -> int:
    """Points in the marker traces of a 3D figure."""
    return sum(
        array_length(trace["x"])
        for trace in figure["data"]
        if trace.get("type") == "scatter3d" and "markers" in trace.get("mode", "")
    )


def camera_traces(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """The wireframe (line) traces of a 3D figure."""
    return [t for t in figure["data"] if "lines" in t.get("mode", "")]


def upload_files(count: int = 3) -> list[tuple[str, bytes, str]]:
    """Small real photos for the uploader, JPEG and PNG."""
    files = []
    for i in range(count):
        if i % 2:
            files.append((f"view_{i:02d}.png", png_bytes(96, 72, seed=i), "image/png"))
        else:
            files.append((f"view_{i:02d}.jpg", jpeg_bytes(96, 72, seed=i), "image/jpeg"))
    return files


def make_run(
    store: RunStore,
    status: RunStatus = RunStatus.completed,
    *,
    images: list[str] | None = None,
    error: str | None = None,
) -> VGGTRun:
    """A run written straight into the store with the given status (no backend involved)."""
    run = store.create_run(VGGTSettings())

    def apply(r: VGGTRun) -> None:
        r.status = status
        r.images = images or ["a.jpg", "b.jpg"]
        if status is not RunStatus.queued:
            r.submitted_at = r.started_at = r.requested_at
        if status in (RunStatus.completed, RunStatus.failed, RunStatus.cancelled):
            r.finished_at = r.requested_at
        r.error = error

    return store.update(run.run_id, apply)


def store_images(store: RunStore, run_id: str, count: int = 3) -> None:
    """Real images in a queued run."""
    store.add_images(run_id, [(n, data) for n, data, _ in upload_files(count)])


def reconstructed_run(store: RunStore, executor: StudioService, **settings: Any) -> VGGTRun:
    """A run taken through the real pipeline against the stand-in; returned once finished."""
    run = store.create_run(VGGTSettings(**settings), backend=executor.config.backend)
    store_images(store, run.run_id)
    executor.start(run.run_id)
    return executor.wait(run.run_id, timeout=60)
