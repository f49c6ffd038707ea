"""RunExecutor: runs go through the Space in bounded background threads; every step is recorded."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .config import Settings
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    RemoteJob,
    RunProgress,
    RunStatus,
    UploadStats,
    VGGTRun,
    utc_now,
)
from .space import SpaceCancelled, SpaceError, StatusReport, VGGTSpace
from .storage import ARTIFACT_FILES, RunBusy, RunStore, StorageError
from .upload_prep import prepare_upload

__all__ = ["RunExecutor"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
_INTERRUPTED = {
    RunStatus.uploading: "sending the images to the backend",
    RunStatus.processing: "the backend was reconstructing",
    RunStatus.fetching: "downloading the result",
}


class RunExecutor:
    """Owns a bounded pool of worker threads, one run per worker; one object per process."""

    def __init__(
        self,
        store: RunStore,
        config: Settings,
        *,
        space_factory: Callable[[], VGGTSpace] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._space_factory = space_factory or (lambda: space_from_settings(config))
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_concurrent_runs, thread_name_prefix="vggt-run"
        )
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[None]] = {}
        self._closed = False

    # --- public surface ----------------------------------------------------------------------

    def submit(self, run_id: str) -> VGGTRun:
        """Request processing: the run waits in `queued` (submittedAt set) for a free worker."""

        def mark(run: VGGTRun) -> None:
            if run.status is not RunStatus.queued:
                raise RunBusy(f"Run {run_id} is {run.status.value}; only a queued run can start")
            if not run.images:
                raise RunBusy(f"Run {run_id} has no images yet")
            run.submitted_at = run.submitted_at or utc_now()

        run = self.store.update(run_id, mark)
        self._enqueue(run_id)
        return run

    def retry(self, run_id: str) -> VGGTRun:
        """Start a failed or cancelled run again from its stored images and settings."""

        def reset(run: VGGTRun) -> None:
            if run.status not in (RunStatus.failed, RunStatus.cancelled):
                raise RunBusy(f"Run {run_id} is {run.status.value}; only a failed or cancelled run")
            run.status = RunStatus.queued
            run.submitted_at = utc_now()
            run.started_at = run.finished_at = None
            run.error = None
            run.progress = None
            run.remote = None
            run.upload = None
            run.artifacts = Artifacts()

        run = self.store.update(run_id, reset)
        for kind in ("glb", "predictions"):
            self.store.artifact_path(run_id, kind).unlink(missing_ok=True)
        self._enqueue(run_id)
        return run

    def cancel(self, run_id: str) -> VGGTRun:
        """Cancel a waiting or running run; the remote job is stopped by its worker."""
        with self._lock:
            event = self._cancel.get(run_id)
            owned = run_id in self._futures and not self._futures[run_id].done()
        if event is not None:
            event.set()

        def mark(run: VGGTRun) -> None:
            if run.status in FINAL_STATUSES:
                return
            waiting = run.status is RunStatus.queued
            # A run no worker of this process holds (waiting, or orphaned) is cancelled here;
            # a running one is marked by its worker once the remote job has stopped.
            if waiting or not owned:
                run.status = RunStatus.cancelled
                run.finished_at = utc_now()
                run.error = None

        return self.store.update(run_id, mark)

    def recover(self) -> list[str]:
        """Apply the start-up rules: interrupted runs fail, submitted queued runs go again."""
        self.store.sweep()
        resubmitted = []
        statuses = [*ACTIVE_STATUSES, RunStatus.queued]
        page = self.store.list_runs(status=statuses, limit=1_000_000)
        for run in reversed(page.runs):  # oldest first, so they queue in their original order
            with self._lock:
                if run.run_id in self._futures:
                    continue
            if run.status in ACTIVE_STATUSES:
                if self.store.is_claimed(run.run_id):
                    continue  # another executor (e.g. a script on the same storage) runs it
                where = _INTERRUPTED[run.status]

                def fail(r: VGGTRun, where: str = where) -> None:
                    if r.status in ACTIVE_STATUSES:
                        r.status = RunStatus.failed
                        r.finished_at = utc_now()
                        r.error = (
                            f"Interrupted: the app stopped while {where}. Retry to run it again."
                        )

                self.store.update(run.run_id, fail)
                self.store.remove_temp_files(run.run_id)  # e.g. a half-downloaded GLB
            elif run.submitted_at is not None:
                self._enqueue(run.run_id)
                resubmitted.append(run.run_id)
        return resubmitted

    def is_running(self, run_id: str) -> bool:
        """True while a worker of this process holds or waits to take the run."""
        with self._lock:
            future = self._futures.get(run_id)
            return future is not None and not future.done()

    def wait(self, run_id: str, timeout: float | None = None) -> VGGTRun:
        """Block until this process's worker for the run is done; return the stored run."""
        with self._lock:
            future = self._futures.get(run_id)
        if future is not None:
            future.result(timeout=timeout)
        return self.store.load(run_id)

    def shutdown(self, *, wait: bool = True, cancel_running: bool = False) -> None:
        """Stop taking runs; optionally cancel the running ones; wait for the workers."""
        self._closed = True
        if cancel_running:
            with self._lock:
                events = list(self._cancel.values())
            for event in events:
                event.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # --- the worker --------------------------------------------------------------------------

    def _enqueue(self, run_id: str) -> None:
        if self._closed:
            raise RuntimeError("The executor is shut down")
        with self._lock:
            existing = self._futures.get(run_id)
            if existing is not None and not existing.done():
                return
            self._cancel[run_id] = threading.Event()
            self._futures[run_id] = self._pool.submit(self._work, run_id)

    def _work(self, run_id: str) -> None:
        with self._lock:
            cancel = self._cancel[run_id]
        claim = None
        try:
            claim = self.store.claim(run_id)
            if claim is None:
                return  # another executor (here or in another process) has it and finishes it
            self._process(run_id, cancel)
        except SpaceCancelled:
            self._finish(run_id, RunStatus.cancelled, None)
        except SpaceError as exc:
            log.info("run %s failed: %s", run_id, exc)
            self._finish(run_id, RunStatus.failed, str(exc))
        except StorageError as exc:
            log.warning("run %s: storage refused a step: %s", run_id, exc)
            self._finish(run_id, RunStatus.failed, f"Storage error: {exc}")
        except Exception as exc:
            log.exception("run %s: unexpected error", run_id)
            self._finish(run_id, RunStatus.failed, f"Unexpected error: {type(exc).__name__}: {exc}")
        finally:
            if claim is not None:
                claim.release()
            with self._lock:
                self._cancel.pop(run_id, None)

    def _process(self, run_id: str, cancel: threading.Event) -> None:
        run = self.store.load(run_id)
        if run.status is not RunStatus.queued or cancel.is_set():
            return
        space = self._space_factory()
        self._step(run_id, RunStatus.uploading, started_at=utc_now(), backend=space.backend)
        with tempfile.TemporaryDirectory(prefix="vggt-upload-") as staging:
            prepared = prepare_upload(self.store.image_paths(run_id), Path(staging), run.presize)
            self._step(
                run_id,
                RunStatus.uploading,
                upload=UploadStats(
                    bytes_sent=prepared.bytes_sent,
                    bytes_original=prepared.bytes_original,
                    files_resized=sum(prepared.resized),
                ),
            )
            progress = _ProgressWriter(self, run_id)
            with space.session() as session:
                target_dir = session.upload(prepared.paths, should_cancel=cancel.is_set)
                self._step(
                    run_id,
                    RunStatus.processing,
                    remote=RemoteJob(target_dir=target_dir),
                    progress=None,
                )
                result = session.reconstruct(
                    target_dir, run.settings, on_status=progress, should_cancel=cancel.is_set
                )
                progress.flush()
                if cancel.is_set():
                    raise SpaceCancelled
                self._step(run_id, RunStatus.fetching, progress=_final_progress(result.message))
                session.download(result.glb, self.store.artifact_path(run_id, "glb"), "glb")
                artifacts = Artifacts(glb=ARTIFACT_FILES["glb"])
                if result.predictions is not None:
                    dest = self.store.artifact_path(run_id, "predictions")
                    session.download(result.predictions, dest, "predictions")
                    artifacts.predictions = ARTIFACT_FILES["predictions"]
        self._finish(run_id, RunStatus.completed, None, artifacts=artifacts)

    def _step(self, run_id: str, status: RunStatus, **changes: Any) -> None:
        def apply(run: VGGTRun) -> None:
            if run.status in FINAL_STATUSES:
                # Cancelled (or deleted and recreated) under us: stop at the next check.
                raise SpaceCancelled
            run.status = status
            for key, value in changes.items():
                setattr(run, key, value)

        self.store.update(run_id, apply)

    def _finish(self, run_id: str, status: RunStatus, error: str | None, **changes: Any) -> None:
        def apply(run: VGGTRun) -> None:
            if run.status in FINAL_STATUSES:
                return  # cancelled or finished by someone else first: theirs stands
            run.status = status
            run.error = error
            run.finished_at = utc_now()
            for key, value in changes.items():
                setattr(run, key, value)

        try:
            self.store.update(run_id, apply)
        except StorageError as exc:
            log.warning("run %s: could not record %s: %s", run_id, status.value, exc)

    def _write_progress(self, run_id: str, report: StatusReport) -> None:
        def apply(run: VGGTRun) -> None:
            if run.status is RunStatus.processing:
                run.progress = RunProgress(
                    rank=report.rank,
                    queue_size=report.queue_size,
                    eta=report.eta,
                    fraction=report.fraction,
                    message=report.message,
                    updated_at=utc_now(),
                )

        self.store.update(run_id, apply)


def _final_progress(message: str) -> RunProgress:
    return RunProgress(
        fraction=1.0, message=message or "Reconstruction finished", updated_at=utc_now()
    )


class _ProgressWriter:
    """Writes the backend's reports to metadata at most every PROGRESS_INTERVAL_S."""

    def __init__(self, executor: RunExecutor, run_id: str) -> None:
        self._executor = executor
        self._run_id = run_id
        self._last_write = 0.0
        self._pending: StatusReport | None = None

    def __call__(self, report: StatusReport) -> None:
        self._pending = report
        if time.monotonic() - self._last_write >= PROGRESS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write the latest report now, if one is pending."""
        if self._pending is not None:
            self._executor._write_progress(self._run_id, self._pending)
            self._pending = None
            self._last_write = time.monotonic()


def space_from_settings(config: Settings) -> VGGTSpace:
    """The Space adapter configured by these settings."""
    return VGGTSpace(
        config.backend,
        config.token,
        connect_timeout_s=config.connect_timeout_s,
        read_timeout_s=config.read_timeout_s,
        job_timeout_s=config.job_timeout_s,
        download_timeout_s=config.download_timeout_s,
    )
