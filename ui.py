"""Shared widgets of the VGGT Studio pages: cached resources, status, progress, run detail, 3D."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import tempfile
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from PIL import Image, ImageOps
from pydantic import ValidationError

from vggt_core import (
    ImageRejected,
    ImagesRejected,
    RunExecutor,
    RunNotFound,
    RunStatus,
    RunStore,
    Settings,
    StorageError,
    VGGTRun,
    VGGTSettings,
    check_image,
    is_valid_run_id,
    load_settings,
)
from vggt_core.glb import GLBError, export_ply, preview_figure, read_glb

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from streamlit.runtime.uploaded_file_manager import UploadedFile

POLL_SECONDS = 1.5
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
HISTORY_PAGE = "pages/history.py"
NEW_RUN_PAGE = "pages/new_run.py"
SESSION_RUNS = "vs_session_runs"
_FLASHES = "vs_flashes"
_THUMB_PX = 192

# Statuses are compared with ==, not `is`: Streamlit's reload of changed modules can leave two
# RunStatus classes alive in one process (runs read by a cached store use the older one).
STEPS: tuple[RunStatus, ...] = (
    RunStatus.queued,
    RunStatus.uploading,
    RunStatus.processing,
    RunStatus.fetching,
    RunStatus.completed,
)
BadgeColor = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "primary"]
STATUS_STYLE: dict[str, tuple[str, BadgeColor, str]] = {
    "queued": ("Queued", "gray", ":material/schedule:"),
    "uploading": ("Uploading", "blue", ":material/upload:"),
    "processing": ("Processing", "violet", ":material/model_training:"),
    "fetching": ("Fetching", "blue", ":material/download:"),
    "completed": ("Completed", "green", ":material/check_circle:"),
    "failed": ("Failed", "red", ":material/error:"),
    "cancelled": ("Cancelled", "orange", ":material/cancel:"),
    "broken": ("Broken", "red", ":material/broken_image:"),
}
MODE_LABELS = {"depth": "Depthmap and Camera Branch", "pointmap": "Pointmap Branch"}


# --- entry point ----------------------------------------------------------------------------


def require_entrypoint() -> None:
    """Rerun through app.py when Streamlit ran this page on its own (its pages/ folder mode).

    With a `pages/` folder beside app.py, Streamlit runs the requested page file directly
    until st.navigation has been called once in the process (e.g. when a fresh server's
    first visitor opens /history): that page would lack app.py's page config and sidebar.
    """
    from streamlit.runtime.pages_manager import PagesManager  # no public switch exists

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation in app.py sets
        st.rerun()


# --- configuration and the shared objects --------------------------------------------------


@dataclass(frozen=True)
class AppContext:
    """The settings of this run of the script and the process-wide store and executor."""

    settings: Settings
    store: RunStore
    executor: RunExecutor


def secrets_overrides() -> dict[str, Any]:
    """Top-level values of Streamlit secrets; empty when there is no (readable) secrets.toml."""
    try:
        return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, Mapping)}
    except Exception:  # st.secrets raises when no secrets.toml exists: that is the normal case
        return {}


def _settings_key(settings: Settings) -> str:
    # The token only enters as part of a digest: the key itself never holds a secret.
    raw = settings.model_dump_json() + "\0" + (settings.token or "")
    return hashlib.sha256(raw.encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def _store_for(root: str, max_images: int, max_bytes: int, max_pixels: int) -> RunStore:
    return RunStore(
        root, max_images=max_images, max_image_bytes=max_bytes, max_image_pixels=max_pixels
    )


@st.cache_resource(show_spinner=False)
def _recovered_roots() -> set[str]:
    return set()


@st.cache_resource(show_spinner=False)
def _executor_for(key: str, _store: RunStore, _settings: Settings) -> RunExecutor:
    executor = RunExecutor(_store, _settings)
    recovered = _recovered_roots()
    # Once per storage folder and process: an executor made later (the secrets changed) must not
    # mark the runs an earlier one is still working on as interrupted.
    if str(_store.root) not in recovered:
        recovered.add(str(_store.root))
        executor.recover()
    return executor


def context() -> AppContext:
    """Settings (secrets over environment over defaults) and the cached store and executor."""
    try:
        settings = load_settings(secrets_overrides())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'setting'}: {e['msg']}" for e in exc.errors()
        )
        st.error(f"The configuration is not valid: {problems}.", icon=":material/settings:")
        st.stop()
    try:
        store = _store_for(
            str(Path(settings.storage_dir).resolve()),
            settings.max_images_per_run,
            settings.max_image_bytes,
            settings.max_image_pixels,
        )
    except OSError as exc:
        st.error(
            md_escape(f"The storage folder {settings.storage_dir} cannot be used: {exc.strerror}.")
        )
        st.stop()
    executor = _executor_for(_settings_key(settings), store, settings)
    return AppContext(settings, store, executor)


@st.cache_data(ttl=10, show_spinner=False)
def _disk_usage(root: str, counts: tuple[tuple[str, int], ...], _store: RunStore) -> int:
    return _store.disk_usage()


def disk_usage(store: RunStore) -> int:
    """Bytes the runs use, re-counted at most every 10 s (walking every file is not free),
    and at once when a run is added, deleted or changes status (e.g. its model arrived)."""
    return _disk_usage(str(store.root), tuple(sorted(store.counts().items())), store)


def display_backend(backend: str) -> str:
    """The backend as it may be shown: a URL loses any user:password part."""
    if "://" not in backend:
        return backend
    parts = urlsplit(backend)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def md_escape(text: str) -> str:
    """Text from files, the backend or the disk, shown literally by Streamlit's markdown."""
    return re.sub(r"([\\`*_\[\]|~<>$:])", r"\\\1", text)


# --- messages that survive st.rerun ---------------------------------------------------------

FlashKind = Literal["success", "info", "warning", "error"]


def flash(message: str, kind: FlashKind = "info") -> None:
    """Queue a message for the next run of the page (st.rerun would drop one shown now)."""
    st.session_state.setdefault(_FLASHES, []).append((kind, message))


def show_flashes() -> None:
    """Show and forget the queued messages."""
    for kind, message in st.session_state.pop(_FLASHES, []):
        getattr(st, kind)(message)


# --- formatting -----------------------------------------------------------------------------


def fmt_bytes(n: int | float) -> str:
    """A byte count the way people read it (6.8 MB)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_duration(seconds: float | None) -> str:
    """Seconds as `42 s`, `3 min 05 s` or `1 h 02 min`."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _zone() -> Any:
    name = st.context.timezone
    if name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(name)
    return UTC


def fmt_time(value: datetime | None) -> str:
    """A timestamp in the viewer's time zone (UTC when the browser does not say)."""
    if value is None:
        return "—"
    local = value.astimezone(_zone())
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "")


def elapsed_s(run: VGGTRun) -> float:
    """Seconds since the run started (or was asked to), up to its end when it has one."""
    start = run.started_at or run.submitted_at or run.requested_at
    end = run.finished_at or datetime.now(UTC)
    return (end - start).total_seconds()


def upload_saving(run: VGGTRun) -> str | None:
    """`Sent 6.8 MB instead of 81 MB …`, or None before the upload step."""
    up = run.upload
    if up is None:
        return None
    if not run.presize:
        return f"Sent the original files ({fmt_bytes(up.bytes_sent)}); model-sized images were off."
    if up.files_resized == 0 or up.bytes_sent >= up.bytes_original:
        return (
            f"Sent the original files ({fmt_bytes(up.bytes_sent)}): "
            "model-sized copies would not have been smaller."
        )
    saved = 1 - up.bytes_sent / max(up.bytes_original, 1)
    return (
        f"Sent {fmt_bytes(up.bytes_sent)} instead of {fmt_bytes(up.bytes_original)} "
        f"({saved:.0%} less; {up.files_resized} of {len(run.images)} images sent model-sized)."
    )


# --- status widgets -------------------------------------------------------------------------


def status_label(run: VGGTRun) -> str:
    """The status in words, telling a waiting run from one never started."""
    if run.status == RunStatus.queued:
        return "Waiting" if run.submitted_at is not None else "Not started"
    return STATUS_STYLE[run.status.value][0]


def status_badge(run: VGGTRun | None, *, broken: bool = False) -> None:
    """A coloured badge with the run's status."""
    if broken or run is None:
        label, color, icon = STATUS_STYLE["broken"]
    else:
        _, color, icon = STATUS_STYLE[run.status.value]
        label = status_label(run)
    st.badge(label, icon=icon, color=color)


def _reached(run: VGGTRun) -> int:
    """Index in STEPS of the last step a failed or cancelled run got to."""
    if run.progress is not None and run.progress.fraction == 1.0 and run.remote is not None:
        return STEPS.index(RunStatus.fetching)
    if run.remote is not None and run.remote.target_dir:
        return STEPS.index(RunStatus.processing)
    if run.started_at is not None:
        return STEPS.index(RunStatus.uploading)
    return 0


def step_indicator(run: VGGTRun) -> None:
    """queued → uploading → processing → fetching → completed, with where the run is."""
    if run.status in (RunStatus.failed, RunStatus.cancelled):
        stop = _reached(run)
        mark = "✕ failed" if run.status == RunStatus.failed else "✕ cancelled"
    else:
        stop = STEPS.index(run.status)
        mark = ""
    parts = []
    for i, step in enumerate(STEPS):
        name = step.value.capitalize()
        if mark and i == stop:
            parts.append(f":red[**{name} {mark}**]")
        elif mark and i > stop:
            parts.append(f":gray[○ {name}]")
        elif run.status == RunStatus.completed or i < stop:
            parts.append(f":green[✓ {name}]")
        elif i == stop:
            parts.append(f":blue[**● {name}**]")
        else:
            parts.append(f":gray[○ {name}]")
    st.markdown(" → ".join(parts))


def progress_panel(run: VGGTRun, max_workers: int) -> None:
    """What an active run is doing now: queue place, ETA, progress bar, backend's message."""
    step_indicator(run)
    p = run.progress
    lines: list[str] = []
    if run.status == RunStatus.queued:
        lines.append(
            f"Waiting for a free worker: at most {max_workers} run"
            f"{'s go' if max_workers != 1 else ' goes'} to the backend at a time."
        )
    elif run.status == RunStatus.uploading:
        lines.append(f"Sending {len(run.images)} images to the backend.")
    elif run.status == RunStatus.processing:
        lines.append("The backend is reconstructing the scene.")
    elif run.status == RunStatus.fetching:
        lines.append("Downloading the 3D model.")
    if p is not None and run.status == RunStatus.processing:
        if p.rank is not None:
            size = f" of {p.queue_size}" if p.queue_size is not None else ""
            lines.append(f"Place in the backend's queue: {p.rank + 1}{size}.")
        if p.eta is not None and p.eta >= 0:
            lines.append(f"About {fmt_duration(p.eta)} left (the backend's estimate).")
    saving = upload_saving(run)
    if saving and run.status == RunStatus.uploading:
        lines.append(saving)
    lines.append(f"Elapsed: {fmt_duration(elapsed_s(run))}.")
    st.markdown("  \n".join(lines))
    if p is not None and p.fraction is not None:
        st.progress(p.fraction, text=f"{p.fraction:.0%}")
    if p is not None and p.message:
        st.caption(f"Backend: {md_escape(p.message)}")


# --- images ---------------------------------------------------------------------------------


def _thumbnail(data: bytes) -> bytes | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (_THUMB_PX * 2, _THUMB_PX * 2))  # JPEG: decode at a fraction
            thumb = ImageOps.exif_transpose(image)
            thumb.thumbnail((_THUMB_PX, _THUMB_PX))
            out = io.BytesIO()
            thumb.convert("RGB").save(out, format="JPEG", quality=80)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@st.cache_data(max_entries=2000, show_spinner=False)
def _upload_thumbnail(file_id: str, _data: bytes) -> bytes | None:
    # Keyed by the upload's id rather than its bytes: hashing every photo on each rerun is slow.
    return _thumbnail(_data)


@st.cache_data(max_entries=2000, show_spinner=False)
def _file_thumbnail(path: str, mtime_ns: int, size: int) -> bytes | None:
    try:
        return _thumbnail(Path(path).read_bytes())
    except OSError:
        return None


@st.cache_data(max_entries=2000, show_spinner=False)
def _check_upload(
    file_id: str, name: str, _data: bytes, max_bytes: int, max_pixels: int
) -> str | None:
    try:
        check_image(name, _data, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageRejected as exc:
        return exc.reason
    return None


@dataclass(frozen=True)
class UploadReview:
    """Uploaded files split into the ones that can be sent and per-file refusals."""

    accepted: list[UploadedFile]
    rejected: list[tuple[str, str]]


def review_uploads(files: Sequence[UploadedFile], settings: Settings) -> UploadReview:
    """Check each uploaded file as the store will; files past the per-run limit are refused."""
    accepted: list[UploadedFile] = []
    rejected: list[tuple[str, str]] = []
    for f in files:
        data = f.getvalue()
        reason = _check_upload(
            f.file_id, f.name, data, settings.max_image_bytes, settings.max_image_pixels
        )
        if reason is not None:
            rejected.append((f.name, reason))
        elif len(accepted) >= settings.max_images_per_run:
            rejected.append(
                (f.name, f"too many files: a run holds at most {settings.max_images_per_run}")
            )
        else:
            accepted.append(f)
    return UploadReview(accepted, rejected)


def thumbnails(items: Iterable[tuple[bytes | None, str]]) -> None:
    """Thumbnails with captions, flowing left to right."""
    with st.container(horizontal=True, gap="small"):
        for thumb, caption in items:
            if thumb is None:
                st.caption(f"🖼️ {caption} (no preview)", width=_THUMB_PX)
            else:
                st.image(thumb, caption=caption, width=_THUMB_PX - 32)


def upload_thumbnails(files: Sequence[UploadedFile], limit: int = 48) -> None:
    """Thumbnails of uploaded files with their names and sizes."""
    thumbnails(
        (_upload_thumbnail(f.file_id, f.getvalue()), f"{f.name} · {fmt_bytes(f.size)}")
        for f in files[:limit]
    )
    if len(files) > limit:
        st.caption(f"… and {len(files) - limit} more.")


def run_thumbnails(store: RunStore, run_id: str, limit: int = 48) -> None:
    """Thumbnails of a run's stored images, in model order."""
    try:
        paths = store.image_paths(run_id)
    except StorageError as exc:
        st.warning(md_escape(f"The images cannot be listed: {exc}"))
        return
    if not paths:
        st.caption("No images are stored for this run.")
        return
    items = []
    for path in paths[:limit]:
        try:
            info = path.stat()
        except OSError:
            continue
        thumb = _file_thumbnail(str(path), info.st_mtime_ns, info.st_size)
        items.append((thumb, f"{path.name} · {fmt_bytes(info.st_size)}"))
    thumbnails(items)
    if len(paths) > limit:
        st.caption(f"… and {len(paths) - limit} more.")


# --- runs started in this session, and starting one -----------------------------------------


def remember_run(run_id: str) -> None:
    """Add a run to this session's list (ids only: the disk holds the runs)."""
    ids = st.session_state.setdefault(SESSION_RUNS, [])
    if run_id not in ids:
        ids.insert(0, run_id)


def session_runs(store: RunStore) -> list[VGGTRun]:
    """The runs started in this session, newest first, re-read from disk; gone ones dropped."""
    runs = []
    for run_id in list(st.session_state.get(SESSION_RUNS, [])):
        try:
            runs.append(store.load(run_id))
        except RunNotFound:
            st.session_state[SESSION_RUNS].remove(run_id)
        except StorageError as exc:
            st.warning(md_escape(str(exc)))
    return runs


def start_run(
    ctx: AppContext, settings: VGGTSettings, presize: bool, files: Sequence[tuple[str, bytes]]
) -> VGGTRun | list[str]:
    """Create, fill and submit a run; the problems as sentences when the images are refused."""
    run = ctx.store.create_run(settings, backend=ctx.settings.backend, presize=presize)
    try:
        ctx.store.add_images(run.run_id, files)
    except ImagesRejected as exc:
        ctx.store.delete_run(run.run_id, force=True)  # an empty run is no use to anyone
        return [str(p) for p in exc.problems]
    except StorageError as exc:
        ctx.store.delete_run(run.run_id, force=True)
        return [str(exc)]
    return ctx.executor.submit(run.run_id)


def run_action(action: Callable[[str], object], run_id: str, done: str) -> None:
    """Call an executor/store action, flash its outcome, and rerun the whole app."""
    try:
        action(run_id)
    except StorageError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "success")
    st.rerun()


# --- live panels (fragments that poll only while something is active) ----------------------


def polling_fragment(
    name: str, body: Callable[..., Hashable], expected: Hashable, *args: Any
) -> None:
    """Run `body` as a fragment that reruns every POLL_SECONDS while `expected` is truthy.

    `expected` is what the caller saw just before (e.g. the ids of the active runs shown);
    when `body` sees something else, the whole app reruns, so polling starts or stops and the
    rest of the page catches up.
    """

    def fragment_body(*fragment_args: Any) -> None:
        if body(*fragment_args) != expected:
            st.rerun()

    fragment_body.__qualname__ = f"polling_fragment.{name}"  # a stable, distinct fragment id
    st.fragment(run_every=POLL_SECONDS if expected else None)(fragment_body)(*args)


def _live_runs_body() -> tuple[str, ...]:
    ctx = context()
    active = [r for r in session_runs(ctx.store) if r.is_active]
    for run in active:
        with st.container(border=True):
            run_header(run)
            progress_panel(run, ctx.settings.max_concurrent_runs)
            if st.button("Cancel", key=f"cancel_live_{run.run_id}", icon=":material/stop:"):
                run_action(ctx.executor.cancel, run.run_id, f"Cancelling {run.run_id}.")
    return tuple(r.run_id for r in active)


def live_runs(active_ids: tuple[str, ...]) -> None:
    """This session's active runs, refreshed every POLL_SECONDS until none is active."""
    polling_fragment("session_runs", _live_runs_body, active_ids)


def run_header(run: VGGTRun) -> None:
    """The run id, its status badge and its image count on one line."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**`{run.run_id}`**")
        status_badge(run)
        st.caption(f"{len(run.images)} images · requested {fmt_time(run.requested_at)}")


def finished_card(ctx: AppContext, run: VGGTRun, *, show_preview: bool) -> None:
    """A finished (or never started) run of this session: its result or its error."""
    with st.container(border=True):
        run_header(run)
        step_indicator(run)
        if run.status == RunStatus.completed:
            saving = upload_saving(run)
            st.caption(
                f"Finished in {fmt_duration(run.duration_s)}." + (f" {saving}" if saving else "")
            )
            if show_preview or st.toggle("Show 3D preview", key=f"show_{run.run_id}"):
                preview(ctx.store, run, ctx.settings.preview_points, key=f"preview_{run.run_id}")
            with st.container(horizontal=True):
                downloads(ctx.store, run)
                st.page_link(
                    HISTORY_PAGE,
                    label="Open in History",
                    icon=":material/history:",
                    query_params={"run": run.run_id},
                )
        elif run.status in (RunStatus.failed, RunStatus.cancelled):
            if run.status == RunStatus.failed:
                st.error(md_escape(run.error or "The run failed without a message."))
            else:
                st.info("This run was cancelled.")
            if st.button("Retry", key=f"retry_{run.run_id}", icon=":material/replay:"):
                run_action(ctx.executor.retry, run.run_id, f"Started {run.run_id} again.")
        elif run.status == RunStatus.queued:
            st.info("This run was created but never started.")
            if st.button("Start", key=f"start_{run.run_id}", icon=":material/play_arrow:"):
                run_action(ctx.executor.submit, run.run_id, f"Started {run.run_id}.")


# --- 3D preview and downloads ---------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """A built preview figure and what it shows."""

    figure: go.Figure
    shown: int
    total: int
    cameras: int


@st.cache_resource(max_entries=8, show_spinner="Reading the 3D model…")
def _preview_for(path: str, mtime_ns: int, size: int, budget: int) -> Preview:
    # Keyed by mtime and size too, so a retried run's new GLB is never shown from the cache.
    scene = read_glb(path)
    figure = preview_figure(scene, budget=budget)
    return Preview(figure, min(scene.point_count, budget), scene.point_count, len(scene.cameras))


def preview(store: RunStore, run: VGGTRun, budget: int, *, key: str) -> None:
    """The run's GLB as an interactive 3D plot of at most `budget` points, or why it cannot be."""
    try:
        path = store.artifact_path(run.run_id, "glb")
        info = path.stat()
        if path.is_symlink() or not path.is_file():
            raise FileNotFoundError
    except (FileNotFoundError, StorageError):
        st.warning("This run has no 3D model file (scene.glb is missing).")
        return
    except OSError as exc:
        st.warning(md_escape(f"The 3D model cannot be read: {exc.strerror}."))
        return
    try:
        shown = _preview_for(str(path), info.st_mtime_ns, info.st_size, budget)
    except GLBError as exc:
        st.warning(md_escape(f"The 3D model cannot be shown: {exc}"))
        return
    except (MemoryError, OSError, ValueError) as exc:
        st.warning(md_escape(f"The 3D model cannot be shown ({type(exc).__name__}: {exc})."))
        return
    st.plotly_chart(
        shown.figure,
        key=key,
        theme=None,
        height=560,
        config={"displaylogo": False, "scrollZoom": True},
    )
    note = (
        f"A sample of {shown.shown:,} of the {shown.total:,} points; downloads hold them all. "
        if shown.shown < shown.total
        else ""
    )
    st.caption(note + "Drag to orbit, scroll to zoom, double-click to reset the view.")


@st.cache_data(max_entries=64, show_spinner=False)
def _glb_readable(path: str, mtime_ns: int, size: int) -> bool:
    try:
        read_glb(path)
    except (GLBError, MemoryError):
        return False
    return True


def _ply_bytes(glb_path: Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="vggt-ply-") as tmp:
        target = Path(tmp) / "scene.ply"
        export_ply(read_glb(glb_path), target)
        return target.read_bytes()


def downloads(store: RunStore, run: VGGTRun) -> None:
    """Download buttons for the artifacts a run has; files are read only when clicked."""
    rid = run.run_id
    glb = store.artifact_path(rid, "glb")
    if store.artifact_exists(rid, "glb"):
        st.download_button(
            "Download GLB",
            data=glb.read_bytes,
            file_name=f"{rid}.glb",
            mime="model/gltf-binary",
            key=f"dl_glb_{rid}",
            icon=":material/download:",
            on_click="ignore",
            help="The reconstruction as the backend made it (points and camera cones).",
        )
    if store.artifact_exists(rid, "predictions"):
        st.download_button(
            "Download predictions.npz",
            data=store.artifact_path(rid, "predictions").read_bytes,
            file_name=f"{rid}_predictions.npz",
            mime="application/octet-stream",
            key=f"dl_npz_{rid}",
            icon=":material/data_array:",
            on_click="ignore",
            help="The model's raw outputs: depth, confidence, world points, cameras.",
        )
    info = glb.stat() if store.artifact_exists(rid, "glb") else None
    # A PLY is made from the GLB, so it is offered only when the GLB reads.
    if info is not None and _glb_readable(str(glb), info.st_mtime_ns, info.st_size):
        st.download_button(
            "Download PLY",
            data=lambda: _ply_bytes(glb),
            file_name=f"{rid}.ply",
            mime="application/octet-stream",
            key=f"dl_ply_{rid}",
            icon=":material/scatter_plot:",
            on_click="ignore",
            help="The points only, as a binary PLY for MeshLab, CloudCompare or Open3D.",
        )


# --- one run's detail (History) -------------------------------------------------------------


def valid_run_param(value: object) -> str | None:
    """The `?run=` value when it has a run id's exact shape, else None."""
    return value if isinstance(value, str) and is_valid_run_id(value) else None


def settings_table(run: VGGTRun) -> None:
    """The run's settings in words."""
    s = run.settings
    yes = {True: "yes", False: "no"}
    rows = [
        ("Confidence threshold", f"{s.conf_threshold:g} (percentile)"),
        ("Prediction mode", MODE_LABELS[s.prediction_mode]),
        ("Mask black background", yes[s.mask_black_bg]),
        ("Mask white background", yes[s.mask_white_bg]),
        ("Mask sky", yes[s.mask_sky]),
        ("Show cameras", yes[s.show_cameras]),
        ("Send model-sized images", yes[run.presize]),
        ("Backend", display_backend(run.backend) if run.backend else "—"),
    ]
    st.markdown(
        "\n".join(["| Setting | Value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])
    )


def timings_table(run: VGGTRun) -> None:
    """Requested, started, finished and duration."""
    rows = [
        ("Requested", fmt_time(run.requested_at)),
        ("Started", fmt_time(run.started_at)),
        ("Finished", fmt_time(run.finished_at)),
        ("Duration", fmt_duration(run.duration_s)),
    ]
    st.markdown("\n".join(["| Time | |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]))


def _delete_button(run_id: str, *, active: bool) -> None:
    if st.button(
        "Delete",
        key=f"delete_{run_id}",
        icon=":material/delete:",
        disabled=active or st.session_state.get("vs_confirm_delete") == run_id,
        help="Cancel the run first." if active else "Remove the run and all its files.",
    ):
        st.session_state["vs_confirm_delete"] = run_id
        st.rerun()


def _delete_confirmation(ctx: AppContext, run_id: str) -> None:
    if st.session_state.get("vs_confirm_delete") != run_id:
        return
    with st.container(border=True):
        st.warning(f"Delete run {run_id} with its images and results? This cannot be undone.")
        with st.container(horizontal=True):
            if st.button("Yes, delete it", key=f"delete_yes_{run_id}", type="primary"):
                st.session_state.pop("vs_confirm_delete", None)
                try:
                    ctx.store.delete_run(run_id)
                except StorageError as exc:
                    flash(str(exc), "error")
                else:
                    flash(f"Deleted run {run_id}.", "success")
                    if st.query_params.get("run") == run_id:
                        del st.query_params["run"]
                st.rerun()
            if st.button("Keep it", key=f"delete_no_{run_id}"):
                st.session_state.pop("vs_confirm_delete", None)
                st.rerun()


def _detail_live_body(run_id: str) -> str | None:
    ctx = context()
    try:
        run = ctx.store.load(run_id)
    except StorageError:
        return None
    _detail_head(ctx, run)
    if run.is_active:
        progress_panel(run, ctx.settings.max_concurrent_runs)
        return run_id
    step_indicator(run)
    return None


def _detail_head(ctx: AppContext, run: VGGTRun) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader(f"Run `{run.run_id}`", anchor=False)
        status_badge(run)
    with st.container(horizontal=True):
        if run.status in (RunStatus.failed, RunStatus.cancelled) and st.button(
            "Retry", key=f"retry_{run.run_id}", icon=":material/replay:", type="primary"
        ):
            run_action(ctx.executor.retry, run.run_id, f"Started {run.run_id} again.")
        if run.is_active and st.button(
            "Cancel", key=f"cancel_{run.run_id}", icon=":material/stop:"
        ):
            run_action(ctx.executor.cancel, run.run_id, f"Cancelling {run.run_id}.")
        if (
            run.status == RunStatus.queued
            and run.submitted_at is None
            and st.button("Start", key=f"start_{run.run_id}", icon=":material/play_arrow:")
        ):
            run_action(ctx.executor.submit, run.run_id, f"Started {run.run_id}.")
        _delete_button(run.run_id, active=run.is_active)
        if st.button("Close", key=f"close_{run.run_id}", icon=":material/close:"):
            close_detail()
    _delete_confirmation(ctx, run.run_id)


def close_detail() -> None:
    """Forget the shown run and rerun."""
    if "run" in st.query_params:
        del st.query_params["run"]
    st.session_state.pop("vs_confirm_delete", None)
    st.rerun()


def run_detail(ctx: AppContext, raw_id: object) -> None:
    """Everything about one run; an id that is not a stored run says so and touches nothing."""
    run_id = valid_run_param(raw_id)
    if run_id is None:
        st.error("No such run: the link does not name a run.", icon=":material/search_off:")
        if st.button("Close", key="close_bad_run"):
            close_detail()
        return
    try:
        run = ctx.store.load(run_id)
    except RunNotFound:
        st.error(f"No such run: {run_id}.", icon=":material/search_off:")
        if st.button("Close", key="close_bad_run"):
            close_detail()
        return
    except StorageError as exc:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.subheader(f"Run `{run_id}`", anchor=False)
            status_badge(None, broken=True)
        st.error(md_escape(f"This run cannot be read: {exc}"))
        with st.container(horizontal=True):
            _delete_button(run_id, active=False)
            if st.button("Close", key=f"close_{run_id}", icon=":material/close:"):
                close_detail()
        _delete_confirmation(ctx, run_id)
        return
    polling_fragment("run_detail", _detail_live_body, run_id if run.is_active else None, run_id)
    if run.error and run.status == RunStatus.failed:
        st.error(md_escape(run.error), icon=":material/error:")
    left, right = st.columns([3, 2], gap="large")
    with left:
        if run.status == RunStatus.completed:
            preview(ctx.store, run, ctx.settings.preview_points, key=f"detail_preview_{run_id}")
        elif not run.is_active:
            st.info("No 3D model: the run did not complete.")
    with right:
        if run.status == RunStatus.completed:
            st.markdown("**Downloads**")
            with st.container(horizontal=True):
                downloads(ctx.store, run)
        saving = upload_saving(run)
        if saving:
            st.markdown(f"**Upload** · {saving}")
        st.markdown("**Settings**")
        settings_table(run)
        st.markdown("**Timings**")
        timings_table(run)
    with st.expander(f"Images ({len(run.images)})", expanded=not run.is_active):
        run_thumbnails(ctx.store, run_id)
