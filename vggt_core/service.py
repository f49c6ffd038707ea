"""StudioService: the one object every face (pages, CLI, REST API) calls for every command."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .config import StudioConfig
from .errors import RunBusy, StorageError
from .heartbeat import Heartbeat, LiveWorker, live_workers
from .images import check_image
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    Attempt,
    RunStatus,
    VGGTRun,
    VGGTSettings,
    utc_now,
)
from .runner import RunExecutor, end_orphan
from .space import CheckReport, VGGTSpace
from .storage import ARTIFACT_FILES, ArtifactKind, RunPage, RunStore
from .upload_prep import set_parallel_images

__all__ = ["StudioService", "space_for"]

# How often wait() re-reads a run: the disk is the source of truth, whoever runs it.
WAIT_POLL_S = 0.1


def space_for(config: StudioConfig) -> VGGTSpace:
    """The Space adapter configured by these settings."""
    return VGGTSpace(
        config.backend,
        config.token,
        connect_timeout_s=config.connect_timeout_s,
        read_timeout_s=config.read_timeout_s,
        job_timeout_s=config.job_timeout_s,
        download_timeout_s=config.download_timeout_s,
    )


class StudioService:
    """Runs on one storage root: commands, queries and the background workers behind them.

    Every method returns models or raises the core's errors (see `vggt_core.errors`).
    """

    def __init__(
        self,
        config: StudioConfig,
        *,
        store: RunStore | None = None,
        space: VGGTSpace | None = None,
        workers: bool = True,
        sweep_interval_s: float | None = 10.0,
    ) -> None:
        self.config = config
        self.store = store or RunStore(
            config.storage_dir,
            max_images=config.max_images_per_run,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
        )
        self.space = space or space_for(config)
        self._executor: RunExecutor | None = None
        self._heartbeat: Heartbeat | None = None
        if workers:
            set_parallel_images(config.prep_workers)
            self._executor = RunExecutor(
                self.store,
                lambda: self.space,
                workers=config.max_concurrent_runs,
                sweep_interval_s=sweep_interval_s,
            )
            if sweep_interval_s is not None:
                # Its sweep picks up runs submitted by anyone: say so to the command line.
                self._heartbeat = Heartbeat(self.store.root)
                self._heartbeat.start()

    # --- commands ------------------------------------------------------------------------------

    def create_run(self, settings: VGGTSettings | None = None, *, presize: bool = True) -> VGGTRun:
        """A new, empty `queued` run with these settings."""
        return self.store.create_run(settings, backend=self.space.label, presize=presize)

    def add_images(self, run_id: str, files: Iterable[tuple[str, bytes]]) -> list[str]:
        """Store images in a run not yet started, all or none; the new names."""
        return self.store.add_images(run_id, files)

    def check_image(self, name: str, data: bytes) -> None:
        """Raise ImageRejected when this file would be refused as a run's image."""
        check_image(
            name,
            data,
            max_bytes=self.store.max_image_bytes,
            max_pixels=self.store.max_image_pixels,
        )

    def submit(
        self,
        settings: VGGTSettings,
        files: Sequence[tuple[str, bytes]],
        *,
        presize: bool = True,
    ) -> VGGTRun:
        """Create a run with its images and start it; on any refusal nothing is left behind."""
        run = self.store.create_run(
            settings, backend=self.space.label, presize=presize, images=files
        )
        try:
            return self.start(run.run_id)
        except BaseException:
            with contextlib.suppress(StorageError):
                self.store.delete_run(run.run_id, force=True)  # an empty run is no use to anyone
            raise

    def start(self, run_id: str) -> VGGTRun:
        """Request processing: the run waits in `queued` (submittedAt set) for a free worker."""

        def mark(run: VGGTRun) -> None:
            if run.status is not RunStatus.queued or run.submitted_at is not None:
                state = "already processing" if run.is_active else run.status.value
                raise RunBusy(f"Run {run_id} is {state}; only a run never started can start")
            if not run.images:
                raise RunBusy(f"Run {run_id} has no images yet")
            run.submitted_at = utc_now()
            run.attempt += 1

        return self._enqueue(self.store.update(run_id, mark))

    def retry(self, run_id: str) -> VGGTRun:
        """Start a failed or cancelled run again from its stored images and settings."""

        def reset(run: VGGTRun) -> None:
            if run.status not in (RunStatus.failed, RunStatus.cancelled):
                raise RunBusy(
                    f"Run {run_id} is {run.status.value}; only a failed or cancelled run can retry"
                )
            if not run.images:
                raise RunBusy(f"Run {run_id} has no images to send")
            number = max(run.attempt, 1)
            if run.submitted_at is not None or run.started_at is not None:
                run.attempts.append(
                    Attempt(
                        number=number,
                        status=run.status,
                        reached=run.reached,
                        error=run.error,
                        submitted_at=run.submitted_at,
                        started_at=run.started_at,
                        finished_at=run.finished_at,
                    )
                )
            run.attempt = number + 1
            run.status = RunStatus.queued
            run.submitted_at = utc_now()
            run.started_at = run.finished_at = run.cancel_requested_at = None
            run.error = None
            run.progress = None
            run.remote = None
            run.upload = None
            run.artifacts = Artifacts()

        run = self.store.update(run_id, reset)
        for kind in ARTIFACT_FILES:
            self.store.artifact_path(run_id, kind).unlink(missing_ok=True)  # type: ignore[arg-type]
        return self._enqueue(run)

    def cancel(self, run_id: str) -> VGGTRun:
        """Cancel a waiting or running run, whichever process runs it; a final run stays."""

        def mark(run: VGGTRun) -> None:
            if run.status in FINAL_STATUSES:
                return
            if run.status is RunStatus.queued:  # waiting, or never started: no worker has it
                run.status = RunStatus.cancelled
                run.finished_at = utc_now()
                run.error = None
            elif run.cancel_requested_at is None:
                run.cancel_requested_at = utc_now()

        run = self.store.update(run_id, mark)
        if run.status in ACTIVE_STATUSES:
            if self._executor is not None:
                self._executor.nudge(run_id)
            # Nobody holds it (its worker died): end it here rather than wait for the sweep.
            run = end_orphan(self.store, run_id, cancelled=True) or run
        return run

    def take(self, run_id: str) -> VGGTRun:
        """Have this process's workers run a waiting run now (the command line's `wait` when
        no app or worker runs the storage); a run that is not waiting is left as it is."""
        run = self.store.load(run_id)
        if run.status is RunStatus.queued and run.submitted_at is not None:
            self._enqueue(run)
        return run

    def delete(self, run_id: str, *, force: bool = False) -> None:
        """Delete a run and its files; an active run is refused unless `force` (then cancelled)."""
        if force:
            with contextlib.suppress(StorageError):
                self.cancel(run_id)
        self.store.delete_run(run_id, force=force)

    # --- queries -------------------------------------------------------------------------------

    def get(self, run_id: str) -> VGGTRun:
        """The run as stored now."""
        return self.store.load(run_id)

    def list_runs(
        self,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        query: str | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
    ) -> RunPage:
        """A page of runs, newest first, filtered by status and by text in the id or images."""
        return self.store.list_runs(status, query, limit=limit, offset=offset)

    def active_runs(self) -> list[VGGTRun]:
        """Every run waiting for a worker or running, in any process, newest first."""
        page = self.store.list_runs([*ACTIVE_STATUSES, RunStatus.queued], limit=1 << 30)
        return [run for run in page.runs if run.is_active]

    def counts(self) -> dict[str, int]:
        """How many runs are in each status (`broken` for unreadable metadata)."""
        return self.store.counts()

    def run_count(self) -> int:
        """How many runs are stored."""
        return self.store.run_count()

    def disk_usage(self) -> int:
        """Bytes the runs use on disk."""
        return self.store.disk_usage()

    def image_paths(self, run_id: str) -> list[Path]:
        """The run's stored images, in model order."""
        return self.store.image_paths(run_id)

    def artifact(self, run_id: str, kind: ArtifactKind) -> Path | None:
        """The path of a run's artifact, or None when the run has no such file."""
        if not self.store.artifact_exists(run_id, kind):
            return None
        return self.store.artifact_path(run_id, kind)

    def check(self) -> CheckReport:
        """Whether the backend answers and serves the API this app needs, in plain words."""
        return self.space.check()

    def wait(
        self, run_id: str, timeout: float | None = None, *, poll_s: float = WAIT_POLL_S
    ) -> VGGTRun:
        """Block until the run is neither waiting nor running (whoever runs it); return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.store.load(run_id)
            if not run.is_active:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Run {run_id} is still {run.status.value}")
            time.sleep(poll_s)

    @property
    def max_images_per_run(self) -> int:
        """How many images one run may hold."""
        return self.store.max_images

    @property
    def storage_root(self) -> Path:
        """The storage folder this service works on."""
        return self.store.root

    def live_workers(self) -> list[LiveWorker]:
        """The processes (this one included) whose services run waiting runs on this storage."""
        return live_workers(self.store.root)

    def is_running_here(self, run_id: str) -> bool:
        """True while a worker of this process holds or waits to take the run."""
        return self._executor is not None and self._executor.is_running(run_id)

    # --- life cycle ----------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Start-up: sweep leftovers, end interrupted runs, queue waiting ones; those queued."""
        self.store.sweep()
        if self._executor is None:
            # No workers here: still end what a dead worker left active; waiting runs wait.
            for run in self.store.list_runs(list(ACTIVE_STATUSES), limit=1 << 30).runs:
                with contextlib.suppress(StorageError):
                    end_orphan(self.store, run.run_id)
            return []
        return self._executor.sweep()

    def close(self, *, interrupt: bool = True, timeout: float = 5.0) -> None:
        """Stop the workers; waiting runs stay waiting on disk for the next start.

        With `interrupt`, running runs end interrupted (their remote jobs cancelled) within about
        `timeout`; without, they finish first and only new work is refused.
        """
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._executor is not None:
            self._executor.close(interrupt=interrupt, timeout=timeout)

    def _enqueue(self, run: VGGTRun) -> VGGTRun:
        if self._executor is not None:
            self._executor.enqueue(run.run_id, run.attempt)
        return run
