"""RunExecutor: bounded background workers that take runs through the Space, step by step.

Commands travel through the disk: a run's `attempt` and `cancelRequestedAt` are read back by
the worker holding it at every step, so a cancel from any process is honoured and a worker of an
older attempt never writes over a newer one. A periodic sweep marks active runs that no live
worker holds as interrupted and picks up waiting runs that no worker here has queued.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import RunNotFound, SpaceCancelled, SpaceError, StorageError, bounded_text
from .glb import GLBError, read_glb
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    RemoteJob,
    RunProgress,
    RunStatus,
    RunVersion,
    UploadStats,
    VGGTRun,
    utc_now,
)
from .space import StatusReport, VGGTSpace, glb_size_cap, predictions_size_cap
from .storage import ARTIFACT_FILES, RunStore
from .upload_prep import originals_reason, prepare_upload

__all__ = ["COMMAND_POLL_S", "RunExecutor", "Watch", "end_orphan", "interrupted_message"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
# How often a running worker re-reads its run for a cancel written by another process.
COMMAND_POLL_S = 0.5
_WHERE = {
    RunStatus.uploading: "sending the images to the backend",
    RunStatus.processing: "the backend was reconstructing",
    RunStatus.fetching: "downloading the result",
}


def interrupted_message(status: RunStatus) -> str:
    """What a run reads when the app stopped while it was in `status`."""
    where = _WHERE.get(status, "it was running")
    return f"Interrupted: the app stopped while {where}. Retry to run it again."


def end_orphan(store: RunStore, run_id: str, *, cancelled: bool = False) -> VGGTRun | None:
    """If no live worker holds the active run, end it: cancelled when asked, else interrupted.

    Returns the run when this call ended it, None when a live worker holds it.
    """
    claim = store.claim(run_id, wait_s=0)
    if claim is None:
        return None  # a live worker holds it and reads its commands itself
    try:

        def end(run: VGGTRun) -> None:
            if run.status not in ACTIVE_STATUSES:
                return
            if cancelled or run.cancel_requested_at is not None:
                run.status, run.error = RunStatus.cancelled, None
            else:
                run.status, run.error = RunStatus.failed, interrupted_message(run.status)
                run.error_kind = "interrupted"
            run.finished_at = utc_now()

        run = store.update(run_id, end)
        store.remove_temp_files(run_id)  # e.g. a half-downloaded GLB
        return run
    finally:
        claim.release()


class _Superseded(Exception):
    """The run moved on without this worker (a newer attempt, or finished by someone else)."""


class Watch:
    """A worker's view of the commands for its job: `stops(run)` read from disk at most every
    COMMAND_POLL_S, a local event (a cancel pressed in this process), the app closing."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        closing: threading.Event,
        stops: Callable[[VGGTRun], bool],
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.closing = closing
        self.local = threading.Event()  # no disk read needed for a command of this process
        self._stops = stops
        self._next_read = 0.0
        self._seen = False

    def __call__(self) -> bool:
        """True once the worker must stop."""
        if self._seen or self.local.is_set() or self.closing.is_set():
            return True
        now = time.monotonic()
        if now >= self._next_read:
            self._next_read = now + COMMAND_POLL_S
            try:
                run = self.store.load(self.run_id)
            except StorageError:
                return False  # a passing read problem; the next write will tell
            self._seen = self._stops(run)
        return self._seen


def _run_watch(store: RunStore, run_id: str, attempt: int, closing: threading.Event) -> Watch:
    """Stop on a cancel, a newer attempt, or the run ended by someone else."""

    def stops(run: VGGTRun) -> bool:
        return (
            run.cancel_requested_at is not None
            or run.attempt != attempt
            or run.status in FINAL_STATUSES
        )

    return Watch(store, run_id, closing, stops)


class RunExecutor:
    """A bounded set of worker threads, one run per worker; one object per process."""

    def __init__(
        self,
        store: RunStore,
        space_factory: Callable[[], VGGTSpace],
        *,
        workers: int = 2,
        sweep_interval_s: float | None = 10.0,
    ) -> None:
        self.store = store
        self._space_factory = space_factory
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()  # None: stop
        self._lock = threading.Lock()
        self._pending: set[tuple[str, int]] = set()
        self._watches: dict[str, Watch] = {}
        self._closing = threading.Event()  # interrupt the running runs
        self._stopping = threading.Event()  # take no new job
        # Daemon threads: a stopping process never waits for a run; close() interrupts them.
        self._threads = [
            threading.Thread(target=self._worker_loop, name=f"vggt-run-{i}", daemon=True)
            for i in range(workers)
        ]
        if sweep_interval_s is not None:
            self._threads.append(
                threading.Thread(
                    target=self._sweep_loop,
                    args=(sweep_interval_s,),
                    name="vggt-sweep",
                    daemon=True,
                )
            )
        for thread in self._threads:
            thread.start()
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            # Called before Python joins the non-daemon threads gradio_client's jobs live in: a
            # stopping process cancels its remote jobs and marks its runs interrupted at once
            # instead of waiting for them to finish (atexit would run only after that wait).
            with contextlib.suppress(RuntimeError):
                register(self.close)

    # --- what the service calls ----------------------------------------------------------------

    def enqueue(self, run_id: str, attempt: int) -> None:
        """Have a worker take this attempt of the run when one is free (once per attempt)."""
        if self._stopping.is_set():
            return  # the run stays waiting on disk and is picked up after the restart
        with self._lock:
            if (run_id, attempt) in self._pending:
                return
            self._pending.add((run_id, attempt))
        self._queue.put((run_id, attempt))

    def nudge(self, run_id: str) -> None:
        """Tell this process's worker of the run, if any, to re-read its commands now."""
        with self._lock:
            watch = self._watches.get(run_id)
        if watch is not None:
            watch.local.set()

    def is_running(self, run_id: str) -> bool:
        """True while a worker of this process holds or waits to take the run."""
        with self._lock:
            return run_id in self._watches or any(r == run_id for r, _ in self._pending)

    def sweep(self) -> list[str]:
        """End active runs no live worker holds (interrupted); queue waiting ones; return those."""
        if not self.store.runs_dir.is_dir():
            return []  # the storage folder went away (a deleted test folder): nothing to sweep
        picked = []
        for run in reversed(self.store.started_runs()):  # oldest first: they queue in order
            if run.status in ACTIVE_STATUSES:
                with contextlib.suppress(StorageError):
                    end_orphan(self.store, run.run_id)
            elif run.submitted_at is not None and not self._stopping.is_set():
                with self._lock:
                    known = (run.run_id, run.attempt) in self._pending
                if not known:
                    self.enqueue(run.run_id, run.attempt)
                    picked.append(run.run_id)
        return picked

    def close(self, *, interrupt: bool = True, timeout: float = 5.0) -> None:
        """Take no new run; with `interrupt`, stop the running ones too (remote jobs cancelled,
        runs read interrupted) and wait up to `timeout` for that. Waiting runs stay waiting."""
        if not self._stopping.is_set():
            self._stopping.set()
            for _ in self._threads:
                self._queue.put(None)  # wakes an idle worker at once
        if not interrupt:
            return
        self._closing.set()
        with self._lock:
            watches = list(self._watches.values())
        for watch in watches:
            watch.local.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._stopping.is_set()

    # --- the workers ---------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            job = self._queue.get()
            if job is None:
                return
            try:
                if not self._stopping.is_set():
                    self._work(*job)
            except Exception:
                log.exception("run %s: the worker failed", job[0])
            finally:
                with self._lock:
                    self._pending.discard(job)

    def _sweep_loop(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("the periodic sweep failed")

    def _work(self, run_id: str, attempt: int) -> None:
        try:
            claim = self.store.claim(run_id)
        except RunNotFound:
            return
        if claim is None:
            return  # another worker (here or in another process) has it and finishes it
        watch = _run_watch(self.store, run_id, attempt, self._closing)
        try:
            run = self.store.load(run_id)
            if (
                run.attempt != attempt
                or run.status is not RunStatus.queued
                or run.submitted_at is None
            ):
                return  # cancelled, retried or finished meanwhile: nothing to do for this job
            with self._watching(run_id, watch):
                self._attempt(run, attempt, watch)
        except RunNotFound:
            pass  # deleted under us (a forced delete)
        finally:
            claim.release()

    @contextlib.contextmanager
    def _watching(self, run_id: str, watch: Watch) -> Iterator[None]:
        with self._lock:
            self._watches[run_id] = watch
        try:
            yield
        finally:
            with self._lock:
                self._watches.pop(run_id, None)

    def _attempt(self, run: VGGTRun, attempt: int, watch: Watch) -> None:
        run_id = run.run_id
        try:
            self._process(run, attempt, watch)
        except _Superseded:
            return
        except SpaceCancelled:
            self._finish(run_id, attempt, RunStatus.cancelled, None)
        except SpaceError as exc:
            if watch():  # stopping the remote job can surface as a lost connection
                self._finish(run_id, attempt, RunStatus.cancelled, None)
                return
            log.info("run %s failed: %s", run_id, exc)
            self._finish(run_id, attempt, RunStatus.failed, str(exc), kind=exc.kind)
        except StorageError as exc:
            log.warning("run %s: storage refused a step: %s", run_id, exc)
            self._finish(run_id, attempt, RunStatus.failed, f"Storage error: {exc}", kind="storage")
        except Exception as exc:
            log.exception("run %s: unexpected error", run_id)
            text = bounded_text(f"Unexpected error: {type(exc).__name__}: {exc}")
            self._finish(run_id, attempt, RunStatus.failed, text, kind="unexpected")

    def _process(self, run: VGGTRun, attempt: int, watch: Watch) -> None:
        run_id = run.run_id
        space = self._space_factory()
        self._step(run_id, attempt, RunStatus.uploading, started_at=utc_now(), backend=space.label)
        # Connect first: an unreachable backend fails the run before any image is prepared.
        with (
            space.session(should_cancel=watch) as session,
            self.store.staging(run_id) as staging,
        ):
            prepared = prepare_upload(
                self.store.image_paths(run_id),
                staging,
                run.presize,
                originals_because=originals_reason(
                    run.presize, run.settings.mask_sky, session.is_vggt_1b
                ),
            )
            stats = UploadStats(
                bytes_sent=prepared.bytes_sent,
                bytes_original=prepared.bytes_original,
                files_resized=sum(prepared.resized),
                originals_reason=prepared.originals_reason,
            )
            self._step(run_id, attempt, RunStatus.uploading, upload=stats)
            progress = _ProgressWriter(self, run_id, attempt)
            target_dir = session.upload(prepared.paths, should_cancel=watch)
            self._step(
                run_id,
                attempt,
                RunStatus.processing,
                remote=RemoteJob(target_dir=target_dir),
                progress=None,
            )
            result = session.reconstruct(
                target_dir, run.settings, on_status=progress, should_cancel=watch
            )
            progress.flush()
            if watch():
                raise SpaceCancelled
            self._step(run_id, attempt, RunStatus.fetching, progress=_done(result.message))
            glb_path = self.store.artifact_path(run_id, "glb")
            frames = len(prepared.paths)
            session.download(
                result.glb,
                glb_path,
                "glb",
                max_bytes=glb_size_cap(frames),
                should_cancel=watch,
            )
            artifacts = Artifacts(glb=ARTIFACT_FILES["glb"])
            first = RunVersion(
                number=1,
                settings=run.settings,
                glb=ARTIFACT_FILES["glb"],
                **_glb_counts(glb_path),
                source="reconstruction",
                requested_at=run.submitted_at or utc_now(),
            )
            if result.predictions is not None:
                dest = self.store.artifact_path(run_id, "predictions")
                session.download(
                    result.predictions,
                    dest,
                    "predictions",
                    max_bytes=predictions_size_cap(frames),
                    should_cancel=watch,
                )
                artifacts.predictions = ARTIFACT_FILES["predictions"]
            session_hash = session.session_hash
        if watch():
            raise SpaceCancelled
        # A one-frame re-render only works in this session: its id is kept to resume it.
        remote = RemoteJob(
            target_dir=target_dir, frames=result.frames or None, session_hash=session_hash
        )
        self._finish(
            run_id,
            attempt,
            RunStatus.completed,
            None,
            artifacts=artifacts,
            versions=[first],
            remote=remote,
        )

    def _guarded(self, run_id: str, attempt: int, change: Callable[[VGGTRun], None]) -> VGGTRun:
        """Apply a worker's change only while the run is still this attempt's and active."""

        def apply(run: VGGTRun) -> None:
            if run.attempt != attempt or run.status in FINAL_STATUSES:
                raise _Superseded
            change(run)

        return self.store.update(run_id, apply)

    def _step(self, run_id: str, attempt: int, status: RunStatus, **changes: Any) -> None:
        def apply(run: VGGTRun) -> None:
            if run.cancel_requested_at is not None:
                raise SpaceCancelled
            run.status = status
            for key, value in changes.items():
                setattr(run, key, value)

        self._guarded(run_id, attempt, apply)

    def _finish(
        self,
        run_id: str,
        attempt: int,
        status: RunStatus,
        error: str | None,
        *,
        kind: str | None = None,
        **changes: Any,
    ) -> None:
        closing = self._closing.is_set()

        def apply(run: VGGTRun) -> None:
            final, text, why = status, error, kind
            if status is RunStatus.cancelled and closing and run.cancel_requested_at is None:
                final, text, why = RunStatus.failed, interrupted_message(run.status), "interrupted"
            elif status is RunStatus.completed and run.cancel_requested_at is not None:
                final = RunStatus.cancelled  # cancelled during the download: the user's word
            run.status, run.error, run.finished_at = final, text, utc_now()
            run.error_kind = why if final is RunStatus.failed else None
            if final is RunStatus.completed:
                for key, value in changes.items():
                    setattr(run, key, value)
                for version in run.versions:
                    version.started_at, version.finished_at = run.started_at, run.finished_at

        try:
            run = self._guarded(run_id, attempt, apply)
        except _Superseded:
            return
        except StorageError as exc:
            # Often a full disk: the temp files of the failed step may be what filled it.
            log.warning("run %s: could not record %s: %s", run_id, status.value, exc)
            with contextlib.suppress(StorageError):
                self.store.remove_temp_files(run_id)
            try:
                run = self._guarded(run_id, attempt, apply)
            except (_Superseded, StorageError):
                return  # the sweep marks it interrupted once the claim is released
        if run.status is not RunStatus.completed:
            for kind in ARTIFACT_FILES:
                with contextlib.suppress(OSError, StorageError):
                    self.store.artifact_path(run_id, kind).unlink(missing_ok=True)  # type: ignore[arg-type]

    def _write_progress(self, run_id: str, attempt: int, report: StatusReport) -> None:
        def apply(run: VGGTRun) -> None:
            if run.status is RunStatus.processing:
                run.progress = RunProgress(
                    rank=report.rank,
                    queue_size=report.queue_size,
                    eta=report.eta,
                    fraction=report.fraction,
                    message=None if report.message is None else bounded_text(report.message),
                    updated_at=utc_now(),
                )

        with contextlib.suppress(_Superseded):
            self._guarded(run_id, attempt, apply)


def _glb_counts(path: Path) -> dict[str, int | None]:
    """A GLB's points and camera cones; None when the reader cannot tell (the preview says why)."""
    try:
        scene = read_glb(path)
    except GLBError:
        return {"points": None, "cameras": None}
    return {"points": scene.point_count, "cameras": len(scene.cameras)}


def _done(message: str) -> RunProgress:
    return RunProgress(
        fraction=1.0,
        message=bounded_text(message or "Reconstruction finished"),
        updated_at=utc_now(),
    )


class _ProgressWriter:
    """Writes the backend's reports to metadata at most every PROGRESS_INTERVAL_S."""

    def __init__(self, executor: RunExecutor, run_id: str, attempt: int) -> None:
        self._executor = executor
        self._run_id = run_id
        self._attempt = attempt
        self._last_write = 0.0
        self._pending: StatusReport | None = None

    def __call__(self, report: StatusReport) -> None:
        self._pending = report
        if time.monotonic() - self._last_write >= PROGRESS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write the latest report now, if one is pending."""
        if self._pending is not None:
            self._executor._write_progress(self._run_id, self._attempt, self._pending)
            self._pending = None
            self._last_write = time.monotonic()
