"""Status widgets: the badge, the step indicator and the live progress panel of a run."""

from __future__ import annotations

import math

import streamlit as st

from vggt_core import (
    RunStatus,
    VGGTRun,
)

from .common import STATUS_STYLE, STEPS, elapsed_s, fmt_duration, md_escape, upload_saving

# --- status widgets -------------------------------------------------------------------------


def status_label(run: VGGTRun) -> str:
    """The status in one word, the same word everywhere (badge, table, counters, filter)."""
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
    in_space_queue = run.status == RunStatus.processing and p is not None and p.rank is not None
    if run.status == RunStatus.queued and run.submitted_at is None:
        lines.append("Not started yet: press Start to send it.")
    elif run.status == RunStatus.queued:
        lines.append(
            f"Waiting for a free worker: at most {max_workers} run"
            f"{'s go' if max_workers != 1 else ' goes'} to the backend at a time."
        )
    elif run.status == RunStatus.uploading:
        lines.append(f"Sending {len(run.images)} images to the backend.")
    elif in_space_queue and p is not None and p.rank is not None:
        size = f" of {p.queue_size}" if p.queue_size is not None else ""
        lines.append(f"Waiting in the Space's queue (position {p.rank + 1}{size}).")
    elif run.status == RunStatus.processing:
        lines.append("The backend is reconstructing the scene.")
    elif run.status == RunStatus.fetching:
        lines.append("Downloading the 3D model.")
    eta = p.eta if p is not None and run.status == RunStatus.processing else None
    if eta is not None and math.isfinite(eta) and eta >= 0:
        what = "until it starts" if in_space_queue else "left"
        lines.append(f"About {fmt_duration(eta)} {what} (the Space's estimate).")
    saving = upload_saving(run)
    if saving and run.status == RunStatus.uploading:
        lines.append(saving)
    lines.append(f"Elapsed: {fmt_duration(elapsed_s(run))}.")
    st.markdown("  \n".join(lines))
    if p is not None and p.fraction is not None:
        st.progress(p.fraction, text=f"{p.fraction:.0%}")
    if p is not None and p.message:
        st.caption(f"Backend: {md_escape(p.message)}")
