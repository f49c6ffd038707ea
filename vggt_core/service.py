"""StudioService: the one object every face (pages, CLI, REST API) calls for every command."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .compare import Comparison, compare_items, compare_poses, parse_ref
from .config import StudioConfig
from .errors import RunBusy, RunNotFound, StorageError, storage_error
from .exports import EXPORT_SUFFIXES, ExportFormat, export_file, export_run_zip
from .heartbeat import Heartbeat, LiveWorker, live_workers
from .images import check_image
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    Attempt,
    RenderStatus,
    RunStatus,
    RunVersion,
    VGGTRun,
    VGGTSettings,
    VideoSource,
    utc_now,
)
from .rerender import RenderExecutor, stale_render
from .runner import RunExecutor, end_orphan
from .space import CheckReport, VGGTSpace
from .storage import ARTIFACT_FILES, ArtifactKind, RunPage, RunStore
from .upload_prep import set_parallel_images
from .video import VideoLimits, safe_video_name, sample_video

__all__ = ["StudioService", "space_for"]

# How often wait() re-reads a run: the disk is the source of truth, whoever runs it.
WAIT_POLL_S = 0.1


@contextlib.contextmanager
def _export_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, "write the export") from None


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


def _size_of(data_or_path: bytes | Path) -> int:
    return len(data_or_path) if isinstance(data_or_path, bytes) else data_or_path.stat().st_size


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
        self._renders: RenderExecutor | None = None
        self._renders_lock = threading.Lock()
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
        return self._create_started(settings, files, presize=presize)

    def submit_video(
        self,
        settings: VGGTSettings,
        name: str,
        data_or_path: bytes | Path,
        *,
        fps: float = 1.0,
        presize: bool = True,
    ) -> VGGTRun:
        """Sample a video's frames into a new run (the clip kept beside them) and start it.

        A clip that does not decode, is empty, too long or too big raises VideoRejected and
        creates nothing.
        """
        limits = self.video_limits
        sampled = sample_video(name, data_or_path, limits, fps)
        stored = safe_video_name(name)
        source = VideoSource(
            file_name=stored,
            size=_size_of(data_or_path),
            duration_s=round(sampled.duration_s, 3),
            clip_fps=round(sampled.clip_fps, 3),
            sample_fps=fps,
            frame_count=len(sampled.frames),
            rotation=sampled.rotation,
        )
        return self._create_started(
            settings,
            sampled.frames,
            presize=presize,
            video_file=(stored, data_or_path),
            video=source,
        )

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
                        error_kind=run.error_kind,
                        submitted_at=run.submitted_at,
                        started_at=run.started_at,
                        finished_at=run.finished_at,
                    )
                )
            run.attempt = number + 1
            run.status = RunStatus.queued
            run.submitted_at = utc_now()
            run.started_at = run.finished_at = run.cancel_requested_at = None
            run.error = run.error_kind = None
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

    def rerender(
        self, run_id: str, settings: VGGTSettings, *, frame: int | None = None
    ) -> RunVersion:
        """Queue a re-render of a completed run with new settings (no GPU): a new version."""
        renders = self._render_executor()
        self.get(run_id)  # ends a render whose process is gone, so it does not block this one

        def add(run: VGGTRun) -> None:
            if run.status is not RunStatus.completed or run.version() is None:
                raise RunBusy(
                    f"Run {run_id} is {run.status.value}; only a completed run can re-render"
                )
            if run.render is not None:
                raise RunBusy(
                    f"Run {run_id} is already re-rendering version {run.render.number}; "
                    "wait for it or cancel it"
                )
            if frame is not None and not 0 <= frame < len(run.images):
                raise RunBusy(
                    f"Frame {frame} is out of range: run {run_id} has {len(run.images)} frame(s) "
                    "(0 is the first)"
                )
            run.versions = run.all_versions
            run.versions.append(
                RunVersion(
                    number=max(v.number for v in run.versions) + 1,
                    status=RenderStatus.queued,
                    settings=settings,
                    frame=frame,
                    owner_pid=os.getpid(),
                )
            )

        run = self.store.update(run_id, add)
        version = run.versions[-1]
        renders.enqueue(run_id, version.number)
        return version

    def cancel_render(self, run_id: str) -> VGGTRun:
        """Cancel the run's waiting or running re-render, if any."""

        def mark(run: VGGTRun) -> None:
            version = run.render
            if version is None:
                return
            if version.status is RenderStatus.queued:
                version.status, version.finished_at = RenderStatus.cancelled, utc_now()
            elif version.cancel_requested_at is None:
                version.cancel_requested_at = utc_now()

        before = self.store.load(run_id).render
        self.store.update(run_id, mark)
        if before is not None and self._renders is not None:
            self._renders.nudge(run_id, before.number)
        return self.get(run_id)

    def rerun(self, run_id: str, settings: VGGTSettings) -> VGGTRun:
        """Start a new run with this run's images and new settings, linked to it as its parent
        (for when the backend forgot the run and cannot re-render it)."""
        parent = self.store.load(run_id)
        files = [(path.name, path.read_bytes()) for path in self.store.image_paths(run_id)]
        if not files:
            raise RunBusy(f"Run {run_id} has no images to send again")
        return self._create_started(settings, files, presize=parent.presize, parent_run_id=run_id)

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
        """The run as stored now (a re-render whose process is gone reads interrupted)."""
        run = self.store.load(run_id)
        render = run.render
        if render is not None and stale_render(render, self._is_my_render(run_id)):
            run = self._end_stale_render(run_id, render.number)
        return run

    def version_glb(self, run_id: str, number: int | None = None) -> Path | None:
        """The GLB of a version (the newest completed one by default), or None."""
        version = self.store.load(run_id).version(number)
        if version is None or version.status is not RenderStatus.completed:
            return None
        return self.store.version_file(run_id, version.glb)

    def export(self, run_id: str, fmt: ExportFormat, *, version: int | None = None) -> Path:
        """One export of a version (the newest by default) as a file in the run's `exports/`,
        made once per version (a version never changes); ExportError says why it cannot be."""
        run = self.get(run_id)
        chosen = run.version(version)
        glb = None if chosen is None else self.store.version_file(run_id, chosen.glb)
        if chosen is None or chosen.status is not RenderStatus.completed or glb is None:
            which = "rendered version" if version is None else f"version {version}"
            raise RunNotFound(f"Run {run_id} has no {which} to export")
        target = self.store.exports_dir(run_id) / f"v{chosen.number}{EXPORT_SUFFIXES[fmt]}"
        if target.is_file() and not target.is_symlink():
            return target
        predictions = self.store.version_file(run_id, run.artifacts.predictions)
        one_frame = chosen.frame is not None  # the predictions hold every frame, the GLB one
        with _export_errors():
            export_file(
                fmt,
                glb,
                target,
                predictions=None if one_frame else predictions,
                images_dir=self.store.run_dir(run_id) / "images",
                mode=chosen.settings.prediction_mode,
            )
        self.store.files_changed(run_id)  # the disk usage counts the new file
        return target

    def export_run(self, run_id: str) -> Path:
        """The whole run (metadata, images, every version's GLB, prepared exports) as a zip in
        its `exports/`, made again at each call since the run may have changed."""
        target = self.store.exports_dir(run_id) / f"{run_id}.zip"
        with _export_errors():
            export_run_zip(self.store.run_dir(run_id), target)
        self.store.files_changed(run_id)
        return target

    def compare(self, refs: Sequence[str]) -> Comparison:
        """Runs or versions side by side (`run_…`, or `run_…@2` for one version)."""
        pairs = [(self.get(run_id), number) for run_id, number in map(parse_ref, refs)]
        found = compare_items(pairs)
        glbs = []
        for item, (run, _) in zip(found.items, pairs, strict=True):
            version = run.version(item.version)
            glbs.append(
                None if version is None else self.store.version_file(run.run_id, version.glb)
            )
        found.poses, found.pose_notes = compare_poses(found.items, glbs)
        return found

    def wait_render(self, run_id: str, number: int, timeout: float | None = None) -> RunVersion:
        """Block until a version is rendered or ended; return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            version = self.get(run_id).version(number)
            if version is None:
                raise RunNotFound(f"Run {run_id} has no version {number}")
            if not version.is_active:
                return version
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Version {number} of run {run_id} is still {version.status}")
            time.sleep(WAIT_POLL_S)

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
        return [run for run in self.store.started_runs() if run.is_active]

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
    def video_limits(self) -> VideoLimits:
        """What a video given to `submit_video` may be (bytes, seconds, frames kept)."""
        return VideoLimits(
            max_bytes=self.config.max_video_bytes,
            max_seconds=self.config.max_video_seconds,
            max_frames=min(self.config.max_video_frames, self.store.max_images),
        )

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
        if self._renders is not None:
            self._renders.close(timeout=timeout)

    def _render_executor(self) -> RenderExecutor:
        with self._renders_lock:
            if self._renders is None:
                self._renders = RenderExecutor(
                    self.store, lambda: self.space, resume_s=self.config.session_keep_s
                )
            return self._renders

    def _is_my_render(self, run_id: str) -> Callable[[int], bool]:
        renders = self._renders
        return lambda number: renders is not None and renders.is_mine(run_id, number)

    def _end_stale_render(self, run_id: str, number: int) -> VGGTRun:
        is_mine = self._is_my_render(run_id)

        def end(run: VGGTRun) -> None:
            version = run.version(number)
            if version is not None and stale_render(version, is_mine):
                version.status = RenderStatus.failed
                version.error = "Interrupted: the app stopped while re-rendering. Re-render again."
                version.finished_at = utc_now()

        return self.store.update(run_id, end)

    def _create_started(
        self,
        settings: VGGTSettings,
        files: Sequence[tuple[str, bytes]],
        *,
        presize: bool,
        video_file: tuple[str, bytes | Path] | None = None,
        **extra: object,
    ) -> VGGTRun:
        """Create a run with its images, already started, and queue it; on any refusal nothing
        is left behind."""
        if not files:
            raise RunBusy("The run has no images yet")
        # Created started (submittedAt, first attempt): one metadata write, and the one fsync
        # of the click is the run folder's rename.
        now = utc_now()
        run = self.store.create_run(
            settings,
            backend=self.space.label,
            presize=presize,
            images=files,
            video_file=video_file,
            requested_at=now,
            submitted_at=now,
            attempt=1,
            **extra,
        )
        try:
            return self._enqueue(run)
        except BaseException:
            with contextlib.suppress(StorageError):
                self.store.delete_run(run.run_id, force=True)  # an unstarted copy is no use
            raise

    def _enqueue(self, run: VGGTRun) -> VGGTRun:
        if self._executor is not None:
            self._executor.enqueue(run.run_id, run.attempt)
        return run
