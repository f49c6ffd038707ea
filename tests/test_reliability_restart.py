"""The app's process dies (SIGKILL) in each active step; a new executor on the same storage
marks the run interrupted, Retry completes it, and a submitted waiting run starts again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers_images import run_files

from vggt_core import RunStatus, RunStore, StudioService, load_config
from vggt_core.glb import read_glb
from vggt_core.local_space import (
    LocalSpaceProcess,
    StandInOptions,
    spawn_local_space,
    write_sample_images,
)

CHILD = Path(__file__).parent / "children" / "executor_child.py"
PROJECT = Path(__file__).resolve().parents[1]
HEALTHY = {"upload_delay": 0.0, "delay": 0.0, "progress_steps": 0, "download_rate": None}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> Iterator[LocalSpaceProcess]:
    """A child-process stand-in: unlimited concurrency, so an orphaned job never blocks Retry."""
    workdir = tmp_path_factory.mktemp("restart_space")
    with spawn_local_space(StandInOptions(concurrency_limit=None), workdir=workdir) as space:
        yield space


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[tuple[str, bytes]]:
    folder = tmp_path_factory.mktemp("restart_images")
    return [(p.name, p.read_bytes()) for p in write_sample_images(folder, count=2)]


def start_app(storage: Path, backend_url: str, run_ids: list[str]) -> subprocess.Popen[str]:
    """The app's executor in a process of its own, with the runs submitted."""
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "VGGT_BACKEND": backend_url,
        "VGGT_STORAGE_DIR": str(storage),
        "VGGT_MAX_CONCURRENT_RUNS": "1",
    }
    env.pop("HF_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, str(CHILD), *run_ids],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(PROJECT),
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "submitted", process.wait(10)
    return process


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def temp_files(store: RunStore, run_id: str) -> list[Path]:
    return [p for p in store.run_dir(run_id).iterdir() if p.name.startswith(".tmp-")]


def mid_upload(store: RunStore, run_id: str, space: LocalSpaceProcess, calls: int) -> bool:
    return store.load(run_id).status is RunStatus.uploading and len(space.received) > calls


def mid_processing(store: RunStore, run_id: str, space: LocalSpaceProcess, calls: int) -> bool:
    run = store.load(run_id)
    return run.status is RunStatus.processing and run.progress is not None


def mid_download(store: RunStore, run_id: str, space: LocalSpaceProcess, calls: int) -> bool:
    partial = temp_files(store, run_id)
    return (
        store.load(run_id).status is RunStatus.fetching
        and bool(partial)
        and partial[0].stat().st_size > 0
    )


@pytest.mark.parametrize(
    ("step", "slow", "reached", "where"),
    [
        ("uploading", {"upload_delay": 60.0}, mid_upload, "sending the images to the backend"),
        (
            "processing",
            {"delay": 60.0, "progress_steps": 60},
            mid_processing,
            "the backend was reconstructing",
        ),
        ("fetching", {"download_rate": 40_000.0}, mid_download, "downloading the result"),
    ],
)
def test_killed_in_each_step_is_interrupted_then_retry_completes(
    backend, images, tmp_path, step, slow, reached, where
):
    storage = tmp_path / "storage"
    store = RunStore(storage)
    run_id = store.create_run().run_id
    store.add_images(run_id, images)
    waiting = store.create_run().run_id  # submitted, but behind the first (one worker)
    store.add_images(waiting, images)
    never_submitted = store.create_run().run_id
    store.add_images(never_submitted, images)

    backend.set_options(**slow)
    calls = len(backend.received)
    app = start_app(storage, backend.url, [run_id, waiting])
    try:
        wait_until(lambda: reached(store, run_id, backend, calls), what=f"{run_id} {step}")
        assert store.load(waiting).status is RunStatus.queued
    finally:
        app.kill()  # SIGKILL: no cleanup of any kind runs in the app's process
        app.wait(10)
    assert app.returncode == -signal.SIGKILL
    assert store.load(run_id).status.value == step  # the disk still says it was running
    backend.set_options(**HEALTHY)

    executor = StudioService(load_config({"VGGT_BACKEND": backend.url}), store=store)
    try:
        assert executor.recover() == [waiting]
        run = store.load(run_id)
        assert run.status is RunStatus.failed
        assert run.error == f"Interrupted: the app stopped while {where}. Retry to run it again."
        assert run.finished_at is not None
        assert executor.wait(waiting, timeout=60).status is RunStatus.completed
        assert store.load(never_submitted).status is RunStatus.queued

        executor.retry(run_id)
        retried = executor.wait(run_id, timeout=60)
    finally:
        executor.close()
    assert retried.status is RunStatus.completed, retried.error
    assert retried.error is None
    for done in (run_id, waiting):
        assert run_files(store.run_dir(done)) == ["images", "metadata.json", "scene.glb"]
        assert len(read_glb(store.artifact_path(done, "glb")).points) > 1000
    assert store.load(never_submitted).status is RunStatus.queued


def test_app_starting_beside_a_running_script_leaves_its_run_alone(backend, images, tmp_path):
    """A script's executor works on a run; the app starts on the same storage. The run is not
    interrupted (its worker is alive): it completes in the script, untouched by recover()."""
    storage = tmp_path / "storage"
    store = RunStore(storage)
    run_id = store.create_run().run_id
    store.add_images(run_id, images)
    backend.set_options(delay=3.0, progress_steps=6)
    script = start_app(storage, backend.url, [run_id])
    try:
        wait_until(lambda: mid_processing(store, run_id, backend, 0), what="processing")
        app = StudioService(load_config({"VGGT_BACKEND": backend.url}), store=RunStore(storage))
        try:
            assert app.recover() == []
            # Still the script's, going on (a busy machine may have moved it a step further).
            assert store.load(run_id).status in {
                RunStatus.processing,
                RunStatus.fetching,
                RunStatus.completed,
            }
            wait_until(
                lambda: store.load(run_id).status is RunStatus.completed,
                timeout=60,
                what="the script to finish the run",
            )
        finally:
            app.close()
    finally:
        script.kill()
        script.wait(10)
        backend.set_options(**HEALTHY)
    run = store.load(run_id)
    assert run.error is None and run.artifacts.glb == "scene.glb"
    assert run_files(store.run_dir(run_id)) == ["images", "metadata.json", "scene.glb"]
