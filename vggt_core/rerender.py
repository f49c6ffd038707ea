"""RenderExecutor: re-renders a completed run with new settings as a new version, in background.

A re-render never runs the model: it re-filters the run's `predictions.npz` here when the run has
one (offline, exact), else asks the backend's `/update_visualization` (CPU, no GPU quota). Each
result is a new GLB under `versions/`; `scene.glb` is never touched. A render belongs to the
process that queued it (`ownerPid`): when that process is gone, the render reads interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import SpaceCancelled, SpaceError, StorageError, bounded_text
from .glb import GLBError, load_predictions, predictions_to_glb, read_glb
from .models import RenderSource, RenderStatus, RunVersion, VGGTRun, VGGTSettings, utc_now
from .runner import Watch
from .space import SpaceSession, VGGTSpace, glb_size_cap
from .storage import RunStore

__all__ = ["RenderExecutor", "frame_filter_value", "render_locally", "stale_render"]

log = logging.getLogger(__name__)

FRAME_FILTER_GONE = (
    "The backend shows one frame only in the session that reconstructed the run, and that "
    "session is gone{why}. Re-render with all frames, or re-run the photos to pick a frame."
)
FORGOTTEN = (
    "The backend no longer holds this run's reconstruction (the Space restarts now and then and "
    "forgets its runs), so it cannot re-render it. Re-run it with these settings: the photos are "
    "sent again and the model runs once more (this costs GPU quota)."
)
UNSUPPORTED = (
    "The backend {label} does not serve /update_visualization, so it cannot re-render. Re-run "
    "it with these settings instead."
)


class _Ended(Exception):
    """The render was cancelled, finished or removed by someone else: stop writing."""


def frame_filter_value(run: VGGTRun, frame: int | None) -> str:
    """The Space's frame-filter string for a frame index ("All" for None)."""
    if frame is None:
        return "All"
    choices = run.remote.frames if run.remote is not None else None
    if choices and 0 <= frame < len(choices):
        return choices[frame]
    names = sorted(run.images)
    if not 0 <= frame < len(names):
        raise ValueError(f"Frame {frame} is out of range: the run has {len(names)} frame(s)")
    return f"{frame}: {names[frame]}"


def render_locally(
    predictions_path: Path, settings: VGGTSettings, frame: int | None, dest: Path
) -> None:
    """Build the GLB from a predictions.npz with the Space's own rules, into `dest`."""
    predictions = load_predictions(predictions_path)
    needed = ["images", "extrinsic", "world_points_from_depth", "depth_conf"]
    if settings.prediction_mode == "pointmap" and "world_points" in predictions:
        needed[2:] = ["world_points", "world_points_conf"]
    missing = [key for key in needed if key not in predictions]
    if missing:
        raise ValueError(f"predictions.npz lacks {', '.join(missing)}")
    scene = predictions_to_glb(
        predictions,
        conf_thres=settings.conf_threshold,
        filter_by_frames="All" if frame is None else f"{frame}: local",
        mask_black_bg=settings.mask_black_bg,
        mask_white_bg=settings.mask_white_bg,
        show_cam=settings.show_cameras,
        prediction_mode=settings.space_kwargs()["prediction_mode"],
    )
    scene.export(file_obj=str(dest), file_type="glb")  # type: ignore[no-untyped-call]


def stale_render(version: RunVersion, is_mine: Callable[[int], bool]) -> bool:
    """True for a waiting or rendering version whose owner process is gone or forgot it."""
    if not version.is_active or version.owner_pid is None:
        return version.is_active
    if version.owner_pid == os.getpid():
        return not is_mine(version.number)
    try:
        os.kill(version.owner_pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _render_watch(store: RunStore, run_id: str, number: int, closing: threading.Event) -> Watch:
    """Stop on a cancel of the version, or the version ended or removed by someone else."""

    def stops(run: VGGTRun) -> bool:
        version = run.version(number)
        return version is None or not version.is_active or version.cancel_requested_at is not None

    return Watch(store, run_id, closing, stops)


class RenderExecutor:
    """One worker thread rendering queued versions of this process, oldest first."""

    def __init__(
        self,
        store: RunStore,
        space_factory: Callable[[], VGGTSpace],
        *,
        resume_s: float = 3000.0,
    ) -> None:
        self.store = store
        self._space_factory = space_factory
        self.resume_s = resume_s
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: set[tuple[str, int]] = set()
        self._watches: dict[tuple[str, int], Watch] = {}
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vggt-render", daemon=True)
        self._thread.start()

    def enqueue(self, run_id: str, number: int) -> None:
        """Render this version when the worker is free."""
        with self._lock:
            if self._closing.is_set() or (run_id, number) in self._pending:
                return
            self._pending.add((run_id, number))
        self._queue.put((run_id, number))

    def is_mine(self, run_id: str, number: int) -> bool:
        """True while this process waits to render, or renders, this version."""
        with self._lock:
            return (run_id, number) in self._pending

    def nudge(self, run_id: str, number: int) -> None:
        """Make the render re-read its commands now (a cancel pressed in this process)."""
        with self._lock:
            watch = self._watches.get((run_id, number))
        if watch is not None:
            watch.local.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop: the render in progress ends interrupted, waiting ones too."""
        self._closing.set()
        with self._lock:
            watches = list(self._watches.values())
            waiting = [job for job in self._pending if job not in self._watches]
        for watch in watches:
            watch.local.set()
        self._queue.put(None)
        self._thread.join(timeout)
        for run_id, number in waiting:
            with contextlib.suppress(StorageError, _Ended):
                self._end(run_id, number, RenderStatus.failed, "Interrupted: the app stopped.")

    # --- the worker ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._closing.is_set():
                return
            run_id, number = job
            watch = _render_watch(self.store, run_id, number, self._closing)
            with self._lock:
                self._watches[job] = watch
            try:
                self._render(run_id, number, watch)
            except Exception:
                log.exception("run %s: rendering version %s failed", run_id, number)
            finally:
                with self._lock:
                    self._watches.pop(job, None)
                    self._pending.discard(job)

    def _render(self, run_id: str, number: int, watch: Watch) -> None:
        try:
            run = self._change(run_id, number, _start)
        except (_Ended, StorageError):
            return
        version = run.version(number)
        assert version is not None
        try:
            name, source = self._build(run, version, watch)
            scene = read_glb(self.store.run_dir(run_id) / name)
        except SpaceCancelled:
            self._end(run_id, number, RenderStatus.cancelled, None)
        except _Refused as exc:
            self._end(run_id, number, RenderStatus.failed, str(exc), kind=exc.kind)
        except SpaceError as exc:
            if watch():
                self._end(run_id, number, RenderStatus.cancelled, None)
            else:
                self._end(run_id, number, RenderStatus.failed, str(exc), kind="backend")
        except (StorageError, GLBError, OSError, ValueError, KeyError) as exc:
            log.warning("run %s: version %s failed: %s", run_id, number, exc)
            text = bounded_text(f"The re-render could not be built or saved: {exc}")
            self._end(run_id, number, RenderStatus.failed, text, kind="storage")
        else:
            counts = (scene.point_count, len(scene.cameras))
            self._end(
                run_id, number, RenderStatus.completed, None, glb=name, counts=counts, source=source
            )

    def _build(self, run: VGGTRun, version: RunVersion, watch: Watch) -> tuple[str, RenderSource]:
        """Render the version's GLB into the run folder; its name there and who built it."""
        predictions = self.store.version_file(run.run_id, run.artifacts.predictions)
        with self.store.staging(run.run_id) as work:
            dest = work / "render.glb"
            source: RenderSource = "space"
            if predictions is not None and not version.settings.mask_sky:
                render_locally(predictions, version.settings, _frame(version), dest)
                source = "local"
            else:
                self._render_on_backend(run, version, dest, watch)
            if watch():
                raise SpaceCancelled
            return self.store.save_version(run.run_id, version.number, dest), source

    def _render_on_backend(
        self, run: VGGTRun, version: RunVersion, dest: Path, watch: Watch
    ) -> None:
        target_dir = run.remote.target_dir if run.remote is not None else None
        if not target_dir:
            raise _Refused(FORGOTTEN, "forgotten")
        frame = _frame(version)
        frame_filter = frame_filter_value(run, frame)
        resume = run.remote.session_hash if run.remote is not None else None
        if frame is not None:
            age = (utc_now() - (run.finished_at or utc_now())).total_seconds()
            if not resume or age > self.resume_s:
                why = "" if not resume else f" (it is {age / 60:.0f} min since the run finished)"
                raise _Refused(FRAME_FILTER_GONE.format(why=why), "frame_filter")
        space = self._space_factory()
        # Only a one-frame render needs the reconstructing session; others take a fresh one.
        resume = resume if frame is not None else None
        with space.session(should_cancel=watch, resume=resume) as session:
            try:
                self._call(session, run, target_dir, version, frame_filter, dest, watch)
            except SpaceError as exc:
                if frame is not None and "not in the list of choices" in str(exc):
                    why = " (the backend has dropped it)"
                    raise _Refused(FRAME_FILTER_GONE.format(why=why), "frame_filter") from None
                raise

    def _call(
        self,
        session: SpaceSession,
        run: VGGTRun,
        target_dir: str,
        version: RunVersion,
        frame_filter: str,
        dest: Path,
        watch: Watch,
    ) -> None:
        if not session.can_render:
            raise _Refused(UNSUPPORTED.format(label=session.space.label), "unsupported")
        result = session.render(
            target_dir, version.settings, frame_filter=frame_filter, should_cancel=watch
        )
        if result.glb is None:
            raise _Refused(FORGOTTEN, "forgotten")
        cap = glb_size_cap(max(len(run.images), 1))
        session.download(result.glb, dest, "glb", max_bytes=cap, should_cancel=watch)

    # --- metadata ------------------------------------------------------------------------------

    def _change(self, run_id: str, number: int, fn: Callable[[RunVersion], None]) -> VGGTRun:
        def apply(run: VGGTRun) -> None:
            version = run.version(number)
            if version is None or not version.is_active:
                raise _Ended
            fn(version)

        return self.store.update(run_id, apply)

    def _end(
        self,
        run_id: str,
        number: int,
        status: RenderStatus,
        error: str | None,
        *,
        kind: str | None = None,
        glb: str | None = None,
        counts: tuple[int, int] | None = None,
        source: RenderSource = "space",
    ) -> None:
        def end(version: RunVersion) -> None:
            final = status
            if status is RenderStatus.completed and version.cancel_requested_at is not None:
                final = RenderStatus.cancelled
            error_text = error
            if status is RenderStatus.cancelled and version.cancel_requested_at is None:
                final, error_text = RenderStatus.failed, "Interrupted: the app stopped."
            version.status, version.error, version.error_kind = final, error_text, kind
            version.finished_at = utc_now()
            if final is RenderStatus.completed:
                version.glb, version.source = glb, source
                version.points, version.cameras = counts or (None, None)

        try:
            run = self._change(run_id, number, end)
        except (_Ended, StorageError):
            run = None
        final = run.version(number) if run is not None else None
        if final is None or final.status is not RenderStatus.completed:
            with contextlib.suppress(ValueError, OSError, StorageError):
                self.store.version_path(run_id, number).unlink(missing_ok=True)


class _Refused(Exception):
    """A render that cannot happen, with the reason for the user and its kind."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _start(version: RunVersion) -> None:
    if version.cancel_requested_at is not None:
        raise _Ended
    version.status = RenderStatus.rendering
    version.started_at = utc_now()


def _frame(version: RunVersion) -> int | None:
    return version.frame
