"""Runs on the New run page: this session's and every active one, actions, live panels."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from vggt_core import RunNotFound, RunStatus, StorageError, StudioService, VGGTError, VGGTRun

from .app_context import AppContext, context
from .common import (
    HISTORY_PAGE,
    SESSION_RUNS,
    flash,
    fmt_duration,
    fmt_time,
    md_escape,
    polling_fragment,
    upload_saving,
)
from .preview import downloads, preview
from .status import progress_panel, status_badge, step_indicator
from .versions import render_status, rerender_form, version_picker

# --- runs started in this session, and starting one -----------------------------------------


def remember_run(run_id: str) -> None:
    """Add a run to this session's list (ids only: the disk holds the runs)."""
    ids = st.session_state.setdefault(SESSION_RUNS, [])
    if run_id not in ids:
        ids.insert(0, run_id)


def session_runs(service: StudioService) -> list[VGGTRun]:
    """The runs started in this session, newest first, re-read from disk; gone ones dropped."""
    runs = []
    for run_id in list(st.session_state.get(SESSION_RUNS, [])):
        try:
            runs.append(service.get(run_id))
        except RunNotFound:
            st.session_state[SESSION_RUNS].remove(run_id)
        except StorageError as exc:
            st.warning(md_escape(str(exc)))
    return runs


def run_action(action: Callable[[str], object], run_id: str, done: str) -> None:
    """Call a service command, flash its outcome, and rerun the whole app."""
    try:
        action(run_id)
    except VGGTError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "success")
    st.rerun()


# --- live panels (fragments that poll only while something is active) ----------------------


def _live_runs_body() -> tuple[str, ...]:
    ctx = context()
    active = ctx.service.active_runs()
    for run in active:
        with st.container(border=True):
            run_header(run)
            progress_panel(run, ctx.settings.max_concurrent_runs)
            if st.button("Cancel", key=f"cancel_live_{run.run_id}", icon=":material/stop:"):
                run_action(ctx.service.cancel, run.run_id, f"Cancelling {run.run_id}.")
    return tuple(r.run_id for r in active)


def live_runs(active_ids: tuple[str, ...]) -> None:
    """Every run waiting or running (this session's or not), refreshed until none is active."""
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
            chosen = version_picker(run, key="card_version")
            if show_preview or st.toggle("Show 3D preview", key=f"show_{run.run_id}"):
                number = chosen.number if chosen else 0
                preview(
                    ctx.service,
                    run,
                    ctx.settings.preview_points,
                    key=f"preview_{run.run_id}_{number}",
                    version=chosen,
                )
            with st.container(horizontal=True):
                downloads(ctx.service, run, chosen)
                st.page_link(
                    HISTORY_PAGE,
                    label="Open in History",
                    icon=":material/history:",
                    query_params={"run": run.run_id},
                )
            render_status(run)
            if chosen is not None:
                rerender_form(ctx.service, run, chosen)
        elif run.status in (RunStatus.failed, RunStatus.cancelled):
            if run.status == RunStatus.failed:
                st.error(md_escape(run.error or "The run failed without a message."))
            else:
                st.info("This run was cancelled.")
            if st.button("Retry", key=f"retry_{run.run_id}", icon=":material/replay:"):
                run_action(ctx.service.retry, run.run_id, f"Started {run.run_id} again.")
        elif run.status == RunStatus.queued:
            st.info("This run was created but never started.")
            if st.button("Start", key=f"start_{run.run_id}", icon=":material/play_arrow:"):
                run_action(ctx.service.start, run.run_id, f"Started {run.run_id}.")
