"""A run goes through the real gradio protocol against the local stand-in: success and failures."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import trimesh
from helpers_images import jpeg_bytes

from vggt_core import RunStatus, RunStore, StudioService, VGGTRun, VGGTSettings, load_config
from vggt_core.local_space import (
    LocalSpace,
    StandInOptions,
    free_port,
    spawn_local_space,
    write_sample_images,
)
from vggt_core.space import VGGTSpace

QUOTA = "You have exceeded your GPU quota (60s requested vs. 0s left). Try again in 0:09:48"
FINAL = {RunStatus.completed, RunStatus.failed, RunStatus.cancelled}


class RecordingStore(RunStore):
    """A real RunStore that also remembers every status it wrote, in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: dict[str, list[tuple[str, float]]] = {}
        self._guard = threading.Lock()

    def _write(self, run: VGGTRun) -> None:
        super()._write(run)
        with self._guard:
            history = self.written.setdefault(run.run_id, [])
            if not history or history[-1][0] != run.status.value:
                history.append((run.status.value, time.monotonic()))


@pytest.fixture(scope="module")
def space() -> Iterator[LocalSpace]:
    with LocalSpace(StandInOptions(concurrency_limit=4, return_predictions=False)) as server:
        yield server


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory) -> list[tuple[str, bytes]]:
    folder = tmp_path_factory.mktemp("images")
    return [(p.name, p.read_bytes()) for p in write_sample_images(folder, count=3)]


def make_executor(root: Path, backend: str, **config) -> tuple[RecordingStore, StudioService]:
    settings = load_config({"VGGT_BACKEND": backend, "VGGT_STORAGE_DIR": str(root), **config})
    store = RecordingStore(root)
    return store, StudioService(settings, store=store)


@contextlib.contextmanager
def executor_for(
    root: Path, backend: str, **config
) -> Iterator[tuple[RecordingStore, StudioService]]:
    store, executor = make_executor(root, backend, **config)
    try:
        yield store, executor
    finally:
        executor.close()


def new_run(store: RunStore, images, settings: VGGTSettings | None = None) -> str:
    run = store.create_run(settings or VGGTSettings())
    store.add_images(run.run_id, images)
    return run.run_id


def wait_for(store: RunStore, run_id: str, statuses, timeout: float = 60.0) -> VGGTRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.load(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"{run_id} still {store.load(run_id).status} after {timeout}s")


def test_success_records_every_step_and_sends_every_setting(space, sample_images, tmp_path):
    settings = VGGTSettings(
        conf_threshold=25,
        prediction_mode="pointmap",
        mask_black_bg=True,
        mask_white_bg=True,
        mask_sky=True,
        show_cameras=True,
    )
    with executor_for(tmp_path, space.url) as (store, executor):
        run_id = new_run(store, sample_images, settings)
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)

    assert run.status is RunStatus.completed, run.error
    assert [s for s, _ in store.written[run_id]] == [
        "queued",
        "uploading",
        "processing",
        "fetching",
        "completed",
    ]
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    assert run.remote and run.remote.target_dir
    assert run.artifacts.glb == "scene.glb" and run.artifacts.predictions is None
    assert not store.artifact_exists(run_id, "predictions")

    scene = trimesh.load(store.artifact_path(run_id, "glb"), file_type="glb")
    clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    cones = [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh)]
    assert len(clouds) == 1 and len(clouds[0].vertices) > 1000
    assert len(cones) == 3

    demo = [c for c in space.received if c["params"].get("target_dir") == run.remote.target_dir]
    assert demo[-1]["params"] == {
        "target_dir": run.remote.target_dir,
        "conf_thres": 25.0,
        "frame_filter": "All",
        "mask_black_bg": True,
        "mask_white_bg": True,
        "show_cam": True,
        "mask_sky": True,
        "prediction_mode": "Pointmap Branch",
    }
    uploads = [c for c in space.received if c["endpoint"] == "/update_gallery_on_upload"]
    sent = uploads[-1]["params"]["input_images"]
    assert sent == ["0000_img_000.png", "0001_img_001.png", "0002_img_002.png"]


def test_without_cameras_the_glb_has_no_cones(space, sample_images, tmp_path):
    with executor_for(tmp_path, space.url) as (store, executor):
        run_id = new_run(store, sample_images, VGGTSettings(show_cameras=False))
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)
    assert run.status is RunStatus.completed, run.error
    scene = trimesh.load(store.artifact_path(run_id, "glb"), file_type="glb")
    assert not [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh)]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("The model ran out of memory", "The Space reported an error: The model ran out of memory"),
        (QUOTA, "GPU quota for anonymous users is used up; add an HF token or retry in 10 minutes"),
        ("No GPU was available after 60s", "No GPU was free on the Space"),
    ],
)
def test_server_errors_become_plain_messages(space, sample_images, tmp_path, error, expected):
    with (
        space.override(error=error, fail_times=None),
        executor_for(tmp_path, space.url) as (store, executor),
    ):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)
    assert run.status is RunStatus.failed
    assert expected in run.error
    assert "Traceback" not in run.error
    assert not store.artifact_exists(run_id, "glb")


def test_a_huge_error_from_the_space_is_stored_bounded(space, sample_images, tmp_path):
    """A 5 MB error message from the backend: the run's metadata keeps a few KB of it."""
    with (
        space.override(error="CUDA out of memory. " + "x" * 5_000_000, fail_times=None),
        executor_for(tmp_path, space.url) as (store, executor),
    ):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        run = executor.wait(run_id, timeout=120)
    assert run.status is RunStatus.failed
    assert run.error.startswith("The Space reported an error: CUDA out of memory. xxx")
    assert run.error.endswith("more characters)")
    assert (store.run_dir(run_id) / "metadata.json").stat().st_size < 4_096


def test_retry_after_a_failure_completes(space, sample_images, tmp_path):
    with (
        space.override(error=QUOTA, fail_times=1),
        executor_for(tmp_path, space.url) as (store, executor),
    ):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        assert executor.wait(run_id, timeout=60).status is RunStatus.failed
        executor.retry(run_id)
        run = executor.wait(run_id, timeout=60)
    assert run.status is RunStatus.completed, run.error
    assert run.error is None and run.artifacts.glb == "scene.glb"


def test_unreachable_backend(sample_images, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with executor_for(tmp_path, url, VGGT_CONNECT_TIMEOUT=2) as (store, executor):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)
    assert run.status is RunStatus.failed
    assert run.error.startswith(f"Cannot reach the backend {url}")


def test_backend_without_the_vggt_api(sample_images, tmp_path):
    other = gr.Interface(lambda text: text, "text", "text")
    other.queue()
    port = free_port()
    other.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}"
        report = VGGTSpace(url).check()
        assert not report.ok
        assert "The endpoint /update_gallery_on_upload is missing." in report.details
        with executor_for(tmp_path, url) as (store, executor):
            run_id = new_run(store, sample_images)
            executor.start(run_id)
            run = executor.wait(run_id, timeout=60)
        assert run.status is RunStatus.failed
        assert "does not serve the VGGT API" in run.error and "/gradio_demo" in run.error
    finally:
        other.close()


def test_check_reports_a_healthy_backend(space):
    report = VGGTSpace(space.url).check()
    assert report.ok, report
    assert "serves the VGGT API" in report.summary


def test_queue_full(sample_images, tmp_path):
    options = StandInOptions(delay=3, queue_max_size=1, concurrency_limit=1)
    with (
        LocalSpace(options) as busy,
        executor_for(tmp_path, busy.url, VGGT_MAX_CONCURRENT_RUNS=3) as (store, executor),
    ):
        ids = [new_run(store, sample_images) for _ in range(3)]
        for run_id in ids:
            executor.start(run_id)
        runs = [executor.wait(run_id, timeout=60) for run_id in ids]
    failed = [r for r in runs if r.status is RunStatus.failed]
    assert failed, [r.status for r in runs]
    assert all(r.error == "The Space's queue is full; retry in a few minutes." for r in failed)
    assert any(r.status is RunStatus.completed for r in runs)


def test_predictions_are_stored_when_the_backend_offers_them(sample_images, tmp_path):
    with (
        LocalSpace(StandInOptions(return_predictions=True)) as server,
        executor_for(tmp_path, server.url) as (store, executor),
    ):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)
    assert run.status is RunStatus.completed, run.error
    assert run.artifacts.predictions == "predictions.npz"
    with np.load(store.artifact_path(run_id, "predictions")) as npz:
        assert npz["world_points"].shape[:1] == (3,)
        assert npz["extrinsic"].shape == (3, 3, 4)


def test_cancel_a_processing_run(sample_images, tmp_path):
    with (
        LocalSpace(StandInOptions(delay=20, progress_steps=20)) as server,
        executor_for(tmp_path, server.url) as (store, executor),
    ):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        wait_for(store, run_id, {RunStatus.processing})
        executor.cancel(run_id)
        # Cancelled, not completed: it ended before the stand-in's 20 s model step did.
        run = wait_for(store, run_id, FINAL)
    assert run.status is RunStatus.cancelled
    assert run.finished_at is not None
    assert not store.artifact_exists(run_id, "glb")


def test_cancel_a_waiting_run_never_reaches_the_backend(sample_images, tmp_path):
    with (
        LocalSpace(StandInOptions(delay=3)) as server,
        executor_for(tmp_path, server.url, VGGT_MAX_CONCURRENT_RUNS=1) as (store, executor),
    ):
        first, second = new_run(store, sample_images), new_run(store, sample_images)
        executor.start(first)
        executor.start(second)
        wait_for(store, first, {RunStatus.processing})
        assert store.load(second).status is RunStatus.queued
        executor.cancel(second)
        assert store.load(second).status is RunStatus.cancelled
        assert executor.wait(first, timeout=60).status is RunStatus.completed
        executor.wait(second, timeout=60)
        uploads = [c for c in server.received if c["endpoint"] == "/update_gallery_on_upload"]
    assert store.load(second).status is RunStatus.cancelled
    assert len(uploads) == 1


def test_four_runs_with_four_workers_run_at_the_same_time(sample_images, tmp_path):
    with (
        # A model step long enough that all four uploads land within it, even on a busy machine.
        LocalSpace(StandInOptions(delay=6, concurrency_limit=4)) as server,
        executor_for(tmp_path, server.url, VGGT_MAX_CONCURRENT_RUNS=4) as (store, executor),
    ):
        ids = [new_run(store, sample_images) for _ in range(4)]
        for run_id in ids:
            executor.start(run_id)
        runs = [executor.wait(run_id, timeout=120) for run_id in ids]
    assert all(r.status is RunStatus.completed for r in runs), [r.error for r in runs]
    # Every run was processing while every other one was: they overlapped, none waited.
    spans = []
    for run_id in ids:
        marks = dict(store.written[run_id])
        spans.append((marks["processing"], marks["fetching"]))
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_server_killed_mid_run(sample_images, tmp_path):
    with (
        spawn_local_space(StandInOptions(delay=10, exit_after=1.0)) as server,
        executor_for(tmp_path, server.url) as (store, executor),
    ):
        run_id = new_run(store, sample_images)
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)
    assert run.status is RunStatus.failed
    assert "connection to the backend was lost" in run.error or "stopped answering" in run.error


def test_frozen_server_times_out(sample_images, tmp_path):
    with spawn_local_space(StandInOptions(delay=30, progress_steps=30)) as server:
        try:
            with executor_for(tmp_path, server.url, VGGT_READ_TIMEOUT=3) as (store, executor):
                run_id = new_run(store, sample_images)
                executor.start(run_id)
                wait_for(store, run_id, {RunStatus.processing})
                os.killpg(server.pid, signal.SIGSTOP)
                run = wait_for(store, run_id, FINAL)  # the read timeout (3 s) ends it
        finally:
            os.killpg(server.pid, signal.SIGCONT)
    assert run.status is RunStatus.failed
    assert "stopped answering" in run.error or "connection to the backend was lost" in run.error


def test_recover_applies_the_start_up_rules(space, sample_images, tmp_path):
    store, executor = make_executor(tmp_path, space.url)
    try:
        ids = {}
        for status in ("uploading", "processing", "fetching", "completed"):
            run_id = new_run(store, sample_images)
            store.update(run_id, lambda r, s=status: setattr(r, "status", RunStatus(s)))
            ids[status] = run_id
        waiting = new_run(store, sample_images)
        store.update(waiting, lambda r: setattr(r, "submitted_at", r.requested_at))
        never_submitted = new_run(store, sample_images)

        assert executor.recover() == [waiting]
        for status in ("uploading", "processing", "fetching"):
            run = store.load(ids[status])
            assert run.status is RunStatus.failed
            assert run.error.startswith("Interrupted: the app stopped while")
        assert store.load(ids["completed"]).status is RunStatus.completed
        assert executor.wait(waiting, timeout=60).status is RunStatus.completed
        assert store.load(never_submitted).status is RunStatus.queued
        assert executor.retry(ids["processing"]).status is RunStatus.queued
        assert executor.wait(ids["processing"], timeout=60).status is RunStatus.completed
    finally:
        executor.close()


@pytest.mark.parametrize("presize", [True, False])
def test_the_runner_sends_model_sized_images_when_asked(space, tmp_path, presize):
    photos = [(f"IMG_{i}.jpg", jpeg_bytes(width=1600, height=1200, seed=i)) for i in range(2)]
    with executor_for(tmp_path, space.url) as (store, executor):
        run = store.create_run(VGGTSettings(), presize=presize)
        store.add_images(run.run_id, photos)
        executor.start(run.run_id)
        run = executor.wait(run.run_id, timeout=60)
    assert run.status is RunStatus.completed, run.error

    upload = [c for c in space.received if c["endpoint"] == "/update_gallery_on_upload"][-1]
    received = {f["name"]: f["size"] for f in upload["files"]}
    originals = sum(len(data) for _, data in photos)
    assert run.upload.bytes_original == originals
    assert run.upload.bytes_sent == sum(received.values())
    if presize:
        assert sorted(received) == ["0000_IMG_0.png", "0001_IMG_1.png"]
        assert run.upload.files_resized == 2
        assert run.upload.bytes_sent < originals
    else:
        assert sorted(received) == ["0000_IMG_0.jpg", "0001_IMG_1.jpg"]
        assert run.upload.bytes_sent == originals and run.upload.files_resized == 0
