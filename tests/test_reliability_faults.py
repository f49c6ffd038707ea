"""Backend faults, end to end through one executor: each run fails with its own plain message,
leaves no partial file, and the next run on the same executor completes (no stuck worker, no
leaked thread). test_runner.py checks the messages of some faults on fresh executors; this
suite adds the download faults, the leftovers and the executor's health after each fault."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from helpers_images import run_files

from vggt_core import RunStatus, RunStore, StudioService, VGGTRun, load_config
from vggt_core.local_space import (
    ZEROGPU_QUOTA_ERROR,
    LocalSpaceProcess,
    StandInOptions,
    build_parser,
    spawn_local_space,
    write_sample_images,
)
from vggt_core.space import VGGTSpace

READ_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 2.0
OPTIONS = StandInOptions(concurrency_limit=2, queue_max_size=2)
FINAL = {RunStatus.completed, RunStatus.failed, RunStatus.cancelled}
LOST = "The connection to the backend was lost during the run (it stopped or restarted); retry."

pytestmark = pytest.mark.slow


@dataclass
class Rig:
    """One executor (one worker) on one storage, talking to a child-process stand-in."""

    space: LocalSpaceProcess
    store: RunStore
    executor: StudioService
    images: list[tuple[str, bytes]]
    upload_paths: list[Path]
    workdir: Path

    def new_run(self) -> str:
        run_id = self.store.create_run().run_id
        self.store.add_images(run_id, self.images)
        return run_id

    def respawn(self) -> None:
        """A new stand-in after the old one was killed; the executor follows the new URL."""
        self.space.stop()
        self.space = spawn_local_space(OPTIONS, workdir=self.workdir / f"space_{time.time_ns()}")
        self.executor.space = space_for_test(self.space.url)


def space_for_test(url: str) -> VGGTSpace:
    return VGGTSpace(
        url,
        connect_timeout_s=READ_TIMEOUT_S,
        read_timeout_s=READ_TIMEOUT_S,
        download_timeout_s=DOWNLOAD_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Rig]:
    top = tmp_path_factory.mktemp("faults")
    paths = write_sample_images(top / "images", count=2)
    space = spawn_local_space(OPTIONS, workdir=top / "space")
    store = RunStore(top / "storage")
    holder: list[Rig] = []

    config = load_config({"VGGT_BACKEND": space.url, "VGGT_MAX_CONCURRENT_RUNS": 1})
    executor = StudioService(config, store=store, space=space_for_test(space.url))
    images = [(p.name, p.read_bytes()) for p in paths]
    holder.append(Rig(space, store, executor, images, paths, top))
    try:
        warm = holder[0].new_run()
        executor.start(warm)
        assert executor.wait(warm, timeout=60).status is RunStatus.completed
        yield holder[0]
    finally:
        executor.close()
        holder[0].space.stop()


def wait_status(store: RunStore, run_id: str, statuses: set[RunStatus], timeout=60) -> VGGTRun:
    deadline = time.monotonic() + timeout
    while (run := store.load(run_id)).status not in statuses:
        assert time.monotonic() < deadline, f"{run_id} still {run.status}"
        time.sleep(0.02)
    return run


def wait_model_step(rig: Rig, run_id: str, timeout: float = 60.0) -> None:
    """Wait until the run is processing and the Space has received its /gradio_demo call (on a
    busy machine `processing` is written a moment before the call goes out)."""
    run = wait_status(rig.store, run_id, {RunStatus.processing}, timeout)
    deadline = time.monotonic() + timeout
    while not any(
        call["endpoint"] == "/gradio_demo"
        and run.remote is not None
        and call["params"]["target_dir"] == run.remote.target_dir
        for call in rig.space.received
    ):
        assert time.monotonic() < deadline, f"the Space never received {run_id}'s model call"
        time.sleep(0.05)
        run = rig.store.load(run_id)


def settled_thread_count(limit: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := threading.active_count()) > limit and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def queue_size(url: str) -> int:
    """How many events wait in the Space's queue (gradio's own /queue/status)."""
    response = httpx.get(f"{url}/gradio_api/queue/status", timeout=30)
    response.raise_for_status()
    return int(response.json()["queue_size"])


# --- the faults: each a context manager around submitting the run ------------------------------


HEALTHY = {
    "error": None,
    "fail_times": None,
    "delay": 0.0,
    "progress_steps": 0,
    "upload_delay": 0.0,
    "download_status": None,
    "download_garbage": False,
    "download_truncate": None,
    "download_rate": None,
}


@contextlib.contextmanager
def options(rig: Rig, **values) -> Iterator[None]:
    rig.space.set_options(**values)
    try:
        yield
    finally:
        rig.space.set_options(**HEALTHY)


@contextlib.contextmanager
def queue_full(rig: Rig) -> Iterator[None]:
    """Another user's jobs fill the Space's queue: two run (concurrency 2), two wait (max 2)."""
    rig.space.set_options(upload_delay=3.0)
    filler = Client(rig.space.url, token=False, download_files=False, verbose=False)
    calls = len(rig.space.received)
    jobs = [
        filler.submit(
            input_video=None,
            input_images=[handle_file(str(p)) for p in rig.upload_paths],
            api_name="/update_gallery_on_upload",
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(rig.space.received) < calls + 2:
        assert time.monotonic() < deadline, "the filler jobs never started"
        time.sleep(0.05)
    # Full: the Space's queue holds max_size (2) waiting events, as its own status says.
    while (waiting := queue_size(rig.space.url)) < 2:
        assert time.monotonic() < deadline, f"the Space's queue holds {waiting}, not 2"
        time.sleep(0.05)
    try:
        yield
    finally:
        rig.space.set_options(**HEALTHY)
        for job in jobs:
            with contextlib.suppress(Exception):
                job.result(timeout=30)
        filler.close()


@contextlib.contextmanager
def frozen(rig: Rig) -> Iterator[Callable[[str], None]]:
    """The Space stops answering mid-run (SIGSTOP): only the read timeout ends the wait."""
    rig.space.set_options(delay=8.0, progress_steps=8)

    def freeze_when_processing(run_id: str) -> None:
        wait_model_step(rig, run_id)
        os.killpg(rig.space.pid, signal.SIGSTOP)

    try:
        yield freeze_when_processing
    finally:
        os.killpg(rig.space.pid, signal.SIGCONT)
        rig.space.set_options(**HEALTHY)


@contextlib.contextmanager
def killed(rig: Rig) -> Iterator[Callable[[str], None]]:
    """The Space's process is killed mid-run (SIGKILL); a new one serves the next run."""
    rig.space.set_options(delay=30.0, progress_steps=30)

    def kill_when_processing(run_id: str) -> None:
        wait_model_step(rig, run_id)
        os.killpg(rig.space.pid, signal.SIGKILL)

    try:
        yield kill_when_processing
    finally:
        rig.respawn()


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Rig], contextlib.AbstractContextManager]
    message: str  # a regular expression the whole error must match

    def __str__(self) -> str:
        return self.name


FAULTS = [
    Fault(
        "app_error",
        lambda rig: options(rig, error="The model ran out of memory"),
        re.escape("The Space reported an error: The model ran out of memory"),
    ),
    Fault(
        "quota",
        lambda rig: options(rig, error=ZEROGPU_QUOTA_ERROR),
        re.escape(
            "The Space's GPU quota for anonymous users is used up; add an HF token or retry "
            "in 10 minutes."
        ),
    ),
    Fault(
        "no_gpu",
        lambda rig: options(rig, error="No GPU was available after 60s"),
        re.escape(
            "No GPU was free on the Space (its GPU queue timed out); retry in a minute, or add "
            "an HF token for a higher priority."
        ),
    ),
    Fault(
        "queue_full",
        queue_full,
        re.escape("The Space's queue is full; retry in a few minutes."),
    ),
    Fault(
        "glb_404",
        lambda rig: options(rig, download_status=404),
        re.escape("Downloading the GLB failed: the backend answered HTTP 404."),
    ),
    Fault(
        "not_a_glb",
        lambda rig: options(rig, download_garbage=True),
        re.escape("The backend's download is not a GLB 3D model (wrong file type)."),
    ),
    Fault(
        "truncated_glb",
        lambda rig: options(rig, download_truncate=0.5),
        r"The GLB download is incomplete: [\d,]+ of [\d,]+ bytes arrived\.",
    ),
    Fault(
        "slow_download",
        lambda rig: options(rig, download_rate=20_000.0),
        re.escape(f"Downloading the GLB took longer than {DOWNLOAD_TIMEOUT_S:.0f} s; retry later."),
    ),
    Fault(
        "frozen",
        frozen,
        re.escape(
            "The backend http://127.0.0.1:PORT stopped answering (timed out); retry later."
        ).replace("PORT", r"\d+"),
    ),
    Fault("killed", killed, re.escape(LOST)),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault_fails_plainly_leaves_nothing_and_the_executor_keeps_working(rig, fault):
    threads_before = threading.active_count()
    run_id = rig.new_run()
    with fault.inject(rig) as trigger:
        rig.executor.start(run_id)
        if callable(trigger):
            trigger(run_id)
        # No hang: the run ends by itself (a frozen Space by the read timeout, a slow download
        # by its deadline: the message says which), long before the deadline of this wait.
        run = wait_status(rig.store, run_id, FINAL, timeout=120)
    assert run.status is RunStatus.failed, run
    assert re.fullmatch(fault.message, run.error), run.error
    assert run_files(rig.store.run_dir(run_id)) == ["images", "metadata.json"]
    assert not rig.store.artifact_exists(run_id, "glb")
    assert run.artifacts.glb is None

    later = rig.new_run()
    rig.executor.start(later)
    done = rig.executor.wait(later, timeout=60)
    assert done.status is RunStatus.completed, done.error
    assert rig.executor.wait(run_id, timeout=60).status is RunStatus.failed
    count = settled_thread_count(threads_before)
    assert count <= threads_before, [t.name for t in threading.enumerate()]


def test_fault_options_round_trip_through_cli_flags():
    options = StandInOptions(
        upload_delay=1.5,
        download_status=404,
        download_garbage=True,
        download_truncate=0.25,
        download_rate=5000.0,
    )
    args = build_parser().parse_args(options.to_args())
    assert (args.upload_delay, args.download_status, args.download_garbage) == (1.5, 404, True)
    assert (args.download_truncate, args.download_rate) == (0.25, 5000.0)
    for bad in ({"download_status": 42}, {"download_truncate": 1.0}, {"download_rate": 0}):
        with pytest.raises(ValueError):
            StandInOptions(**bad)
