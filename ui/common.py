"""Constants, text escaping, messages that survive a rerun, and formatting for the pages."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from vggt_core import (
    RunStatus,
    VGGTRun,
)

POLL_SECONDS = 1.5
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
HISTORY_PAGE = "pages/history.py"
NEW_RUN_PAGE = "pages/new_run.py"
SESSION_RUNS = "vs_session_runs"
_FLASHES = "vs_flashes"
_FLASHES_SHOWN = "vs_flashes_shown"
THUMB_PX = 192

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


def md_escape(text: str) -> str:
    """Text from files, the backend or the disk, shown literally by Streamlit's markdown."""
    return re.sub(r"([\\`*_\[\]|~<>$:])", r"\\\1", text)


# --- messages that survive st.rerun ---------------------------------------------------------

FlashKind = Literal["success", "info", "warning", "error"]


def flash(message: str, kind: FlashKind = "info") -> None:
    """Queue a message for the next run of the page (st.rerun would drop one shown now)."""
    st.session_state.setdefault(_FLASHES, []).append((kind, message))


def show_flashes() -> None:
    """Show the queued messages; they are forgotten once this run of the page ends (a live
    refresh that reruns the page before it ends would otherwise lose them unseen)."""
    queued = st.session_state.get(_FLASHES, [])
    st.session_state[_FLASHES_SHOWN] = len(queued)
    for kind, message in queued:
        getattr(st, kind)(message)


def forget_shown_flashes() -> None:
    """At the end of a run of the page: drop the messages it showed (not ones queued since)."""
    shown = st.session_state.pop(_FLASHES_SHOWN, 0)
    if shown:
        st.session_state[_FLASHES] = st.session_state.get(_FLASHES, [])[shown:]


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
    if up.originals_reason:
        return f"Sent the original files ({fmt_bytes(up.bytes_sent)}). {up.originals_reason}"
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
