"""The core service: every command through StudioService, against a real stand-in and real files.

Each defect of the command path found on the earlier main has its test here.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_service import running, service_on, wait_for
from vggt_core import (
    ImagesRejected,
    LockTimeout,
    RunStatus,
    RunStore,
    StorageError,
    StudioService,
    VGGTSettings,
    VGGTSpace,
    load_config,
)
from vggt_core.local_space import LocalSpace, StandInOptions
from vggt_core.models import utc_now

ROOT = Path(__file__).resolve().parents[1]
FINAL = {RunStatus.completed, RunStatus.failed, RunStatus.cancelled}


@pytest.fixture(scope="module")
def slow_space() -> Iterator[LocalSpace]:
    """A stand-in whose model takes a while, so runs are caught while they work."""
    with LocalSpace(StandInOptions(delay=1.5, progress_steps=3, concurrency_limit=8)) as space:
        yield space


def status_of(service: StudioService, run_id: str) -> RunStatus:
    return service.get(run_id).status


# --- 1. cancel a waiting run, then retry while the only worker is busy -----------------------


def test_retry_after_cancelling_a_waiting_run_runs_it(tmp_path, slow_space, images):
    with running(service_on(tmp_path, slow_space.url, VGGT_MAX_CONCURRENT_RUNS=1)) as service:
        busy = service.submit(VGGTSettings(), images)
        wait_for(lambda: service.get(busy.run_id).status is not RunStatus.queued, what="busy")
        waiting = service.submit(VGGTSettings(), images)
        assert service.cancel(waiting.run_id).status is RunStatus.cancelled
        again = service.retry(waiting.run_id)
        assert again.status is RunStatus.queued and again.attempt == 2
        assert service.wait(busy.run_id, timeout=120).status is RunStatus.completed
        done = service.wait(waiting.run_id, timeout=120)
        assert done.status is RunStatus.completed, done.error
        assert [a.status for a in done.attempts] == [RunStatus.cancelled]


# --- 2. a disk error during a run, and on New run ------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 3 MB tmpfs: writes past it fail with ENOSPC, as on a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a tmpfs (root): {done.stderr.decode()}")
        pytest.skip(f"mounting a tmpfs needs root here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill the disk until `leave` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_a_full_disk_during_a_run_fails_it_in_plain_words(small_disk, images):
    from vggt_core.local_space import LocalSpace as Space

    with Space(StandInOptions()) as space, running(service_on(small_disk, space.url)) as service:
        # The images and metadata fit; the GLB download does not.
        fill(small_disk, leave=sum(len(data) for _, data in images) + 96 * 1024)
        run = service.submit(VGGTSettings(), images)
        done = service.wait(run.run_id, timeout=120)
        assert done.status is RunStatus.failed
        assert "the disk is full" in (done.error or ""), done.error
        assert not service.is_running_here(run.run_id)


def test_new_run_on_a_full_disk_says_so_and_leaves_nothing(small_disk, images):
    service = StudioService(
        load_config({"VGGT_STORAGE_DIR": str(small_disk), "VGGT_BACKEND": "http://127.0.0.1:9"}),
        workers=False,
    )
    fill(small_disk, leave=16 * 1024)
    big = [(f"{i}.png", data) for i, (_, data) in enumerate(images * 8)]
    with pytest.raises(StorageError, match="the disk is full"):
        service.submit(VGGTSettings(), big)
    assert service.list_runs().total == 0


# --- 3. a backend URL with a password ----------------------------------------------------------


def test_credentials_in_the_backend_url_are_never_stored(tmp_path, images):
    backend = "http://user:s3cr3tpass@127.0.0.1:9/?token=hf_abcdefghijklmnop"
    with running(service_on(tmp_path, backend, VGGT_CONNECT_TIMEOUT=2)) as service:
        run = service.submit(VGGTSettings(), images)
        done = service.wait(run.run_id, timeout=60)
    assert done.status is RunStatus.failed
    assert done.backend == "http://127.0.0.1:9/"
    stored = (tmp_path / "runs" / run.run_id / "metadata.json").read_text()
    for secret in ("s3cr3tpass", "user:", "hf_abcdefghijklmnop"):
        assert secret not in stored
        assert secret not in (done.error or "")
    assert "127.0.0.1:9" in (done.error or "")


# --- 4. the Hub busy or rate-limiting ----------------------------------------------------------


@contextlib.contextmanager
def hub_answering(status: int) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"error": "busy"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "words"),
    [(503, "The Hugging Face Hub is busy or down (HTTP 503)"), (429, "rate-limiting")],
)
def test_a_busy_hub_is_not_called_a_missing_space(status, words):
    with hub_answering(status) as hub:
        report = VGGTSpace("facebook/vggt", hub_endpoint=hub).check()
    assert not report.ok
    assert words in report.summary
    assert "No Space named" not in report.summary


# --- 5. cancel from another process, and during the download ------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from vggt_core import StudioService, load_config
    service = StudioService(load_config(), sweep_interval_s=0.3)
    service.start(sys.argv[1])
    print("started", flush=True)
    time.sleep(600)
    """
)


def test_cancel_from_another_process_stops_the_run_and_the_remote_job(tmp_path, images):
    with LocalSpace(StandInOptions(delay=30, progress_steps=30)) as space:
        here = StudioService(
            load_config({"VGGT_BACKEND": space.url, "VGGT_STORAGE_DIR": str(tmp_path)}),
            workers=False,
        )
        run = here.create_run()
        here.add_images(run.run_id, images)
        env = {**os.environ, "VGGT_BACKEND": space.url, "VGGT_STORAGE_DIR": str(tmp_path)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, run.run_id],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                lambda: (
                    status_of(here, run.run_id) is RunStatus.processing
                    and any(c["endpoint"] == "/gradio_demo" for c in space.received)
                ),
                what="the other process to reach the backend",
            )
            assert here.cancel(run.run_id).cancel_requested_at is not None
            done = here.wait(run.run_id, timeout=60)
            assert done.status is RunStatus.cancelled, done.error
            wait_for(
                lambda: any(c["endpoint"] == "/cancel" for c in space.received),
                what="the remote job to be cancelled",
            )
        finally:
            child.kill()
            child.wait()


def test_cancel_during_the_download_is_honoured(tmp_path, images):
    with (
        LocalSpace(StandInOptions(download_rate=20_000)) as space,
        running(service_on(tmp_path, space.url)) as service,
    ):
        run = service.submit(VGGTSettings(), images)
        wait_for(lambda: status_of(service, run.run_id) is RunStatus.fetching, what="fetch")
        service.cancel(run.run_id)
        done = service.wait(run.run_id, timeout=60)
    assert done.status is RunStatus.cancelled
    assert done.artifacts.glb is None
    assert not (tmp_path / "runs" / run.run_id / "scene.glb").exists()


# --- 6. a run left active by a dead worker, and a lock held too long -----------------------------


def test_the_periodic_sweep_ends_an_active_run_nobody_holds(tmp_path, images):
    with running(service_on(tmp_path, "http://127.0.0.1:9")) as service:
        run = service.create_run()

        def orphan(r):
            r.status = RunStatus.processing
            r.submitted_at = r.started_at = utc_now()
            r.attempt = 1

        service.store.update(run.run_id, orphan)  # as a worker that died left it
        done = wait_for(
            lambda: (r := service.get(run.run_id)).status is RunStatus.failed and r,
            what="the sweep",
        )
    assert done.error == (
        "Interrupted: the app stopped while the backend was reconstructing. Retry to run it again."
    )


def test_a_lock_held_elsewhere_times_out_with_a_message(tmp_path):
    store = RunStore(tmp_path)
    run = store.create_run()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
            "lock.acquire(); print('held', flush=True); time.sleep(600)",
            str(store.run_dir(run.run_id) / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match="stayed locked"), store.lock(run.run_id, 0.3):
            pass
    finally:
        holder.kill()
        holder.wait()


# --- random interleavings from two services on one storage --------------------------------------


@pytest.mark.slow
def test_random_start_cancel_retry_from_two_services_end_in_one_final_state(tmp_path, images):
    rng = random.Random(11)
    with (
        LocalSpace(StandInOptions(delay=0.05, concurrency_limit=8)) as space,
        running(service_on(tmp_path, space.url)) as one,
        running(service_on(tmp_path, space.url)) as two,
    ):
        run_ids = []
        for _ in range(100):
            run = one.create_run()
            one.add_images(run.run_id, images[:1])
            run_ids.append(run.run_id)
        for run_id in run_ids:
            for _ in range(rng.randint(1, 4)):
                face = rng.choice([one, two])
                command = rng.choice([face.start, face.cancel, face.retry])
                with contextlib.suppress(StorageError):
                    command(run_id)
                time.sleep(rng.uniform(0, 0.02))
        finals = [one.wait(run_id, timeout=300) for run_id in run_ids]
    for run in finals:
        assert run.status in FINAL or (run.status is RunStatus.queued and run.submitted_at is None)
        assert all(a.status in (RunStatus.failed, RunStatus.cancelled) for a in run.attempts)
        assert [a.number for a in run.attempts] == sorted({a.number for a in run.attempts})
        if run.status is RunStatus.completed:
            assert (tmp_path / "runs" / run.run_id / "scene.glb").is_file()
        else:
            assert not (tmp_path / "runs" / run.run_id / "scene.glb").exists()


def test_submit_refuses_bad_images_and_keeps_nothing(tmp_path):
    service = StudioService(load_config({"VGGT_STORAGE_DIR": str(tmp_path)}), workers=False)
    with pytest.raises(ImagesRejected, match=r"notes\.jpg"):
        service.submit(VGGTSettings(), [("notes.jpg", b"not an image")])
    assert service.list_runs().total == 0


# --- stopping: waiting runs stay waiting, running ones end interrupted at once ------------------

STOPPING_CHILD = textwrap.dedent(
    """
    import sys, time
    from vggt_core import RunStatus, StudioService, VGGTSettings, load_config
    from vggt_core.local_space import write_sample_images
    service = StudioService(load_config())
    images = [(p.name, p.read_bytes()) for p in write_sample_images(sys.argv[1], count=2)]
    running = service.submit(VGGTSettings(), images)
    waiting = service.submit(VGGTSettings(), images)
    print(running.run_id, waiting.run_id, flush=True)
    while service.get(running.run_id).status is not RunStatus.processing:
        time.sleep(0.05)
    sys.exit(0)  # an ordinary interpreter shutdown, as when the app stops
    """
)


def test_stopping_keeps_waiting_runs_and_interrupts_the_running_one(tmp_path):
    options = StandInOptions(delay=60, progress_steps=60, concurrency_limit=4)
    with LocalSpace(options) as space:
        env = {
            **os.environ,
            "VGGT_BACKEND": space.url,
            "VGGT_STORAGE_DIR": str(tmp_path / "storage"),
            "VGGT_MAX_CONCURRENT_RUNS": "1",
        }
        child = subprocess.run(
            [sys.executable, "-c", STOPPING_CHILD, str(tmp_path / "images")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert child.returncode == 0, child.stderr
        running_id, waiting_id = child.stdout.split()
        store = RunStore(tmp_path / "storage")
        was_running, was_waiting = store.load(running_id), store.load(waiting_id)
        assert was_running.status is RunStatus.failed
        assert (was_running.error or "").startswith("Interrupted: the app stopped while")
        assert was_waiting.status is RunStatus.queued and was_waiting.submitted_at is not None
        assert was_waiting.error is None
        wait_for(lambda: any(c["endpoint"] == "/cancel" for c in space.received), what="cancel")
        with (
            space.override(delay=0.0),
            running(service_on(tmp_path / "storage", space.url)) as again,
        ):
            again.recover()
            assert again.wait(waiting_id, timeout=120).status is RunStatus.completed


def test_recover_without_workers_still_ends_what_a_dead_worker_left(tmp_path):
    service = StudioService(load_config({"VGGT_STORAGE_DIR": str(tmp_path)}), workers=False)
    run = service.create_run()

    def left_uploading(r):
        r.status, r.attempt = RunStatus.uploading, 1
        r.submitted_at = r.started_at = utc_now()

    service.store.update(run.run_id, left_uploading)
    service.recover()
    done = service.get(run.run_id)
    assert done.status is RunStatus.failed
    assert done.error == (
        "Interrupted: the app stopped while sending the images to the backend. "
        "Retry to run it again."
    )


def test_a_failed_run_records_which_failure_it_was_and_retry_keeps_it(
    tmp_path, local_space, images
):
    from vggt_core.local_space import ZEROGPU_QUOTA_ERROR

    with running(service_on(tmp_path, local_space.url)) as service:
        with local_space.override(error=ZEROGPU_QUOTA_ERROR, fail_times=1):
            run = service.wait(service.submit(VGGTSettings(), images).run_id, timeout=120)
        assert run.status is RunStatus.failed and run.error_kind == "quota"
        service.retry(run.run_id)
        again = service.wait(run.run_id, timeout=120)
        assert again.status is RunStatus.completed and again.error_kind is None
        assert [a.error_kind for a in again.attempts] == ["quota"]
    with running(service_on(tmp_path, "http://127.0.0.1:9")) as service:
        gone = service.wait(service.submit(VGGTSettings(), images).run_id, timeout=120)
        assert gone.status is RunStatus.failed and gone.error_kind == "unreachable"
