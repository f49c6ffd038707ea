"""One run's detail on the History page: header, tables, actions and the live refresh."""

from __future__ import annotations

import streamlit as st

from vggt_core import (
    RunNotFound,
    RunStatus,
    RunVersion,
    StorageError,
    VGGTRun,
    is_valid_run_id,
    public_backend,
)

from .app_context import AppContext, context
from .common import (
    MODE_LABELS,
    flash,
    fmt_duration,
    fmt_time,
    md_escape,
    polling_fragment,
    upload_saving,
)
from .compare import add_to_compare
from .exports import export_panel
from .images import run_thumbnails
from .preview import downloads, preview
from .runs import run_action
from .status import progress_panel, status_badge, step_indicator
from .versions import parent_link, render_status, rerender_form, version_picker, versions_table

# --- one run's detail (History) -------------------------------------------------------------


def valid_run_param(value: object) -> str | None:
    """The `?run=` value when it has a run id's exact shape, else None."""
    return value if isinstance(value, str) and is_valid_run_id(value) else None


def settings_table(run: VGGTRun, version: RunVersion | None = None) -> None:
    """The settings of the version shown (the run's own when none) in words."""
    s = version.settings if version is not None else run.settings
    yes = {True: "yes", False: "no"}
    frame = None if version is None else version.frame
    rows = [
        ("Confidence threshold", f"{s.conf_threshold:g} (percentile)"),
        ("Prediction mode", MODE_LABELS[s.prediction_mode]),
        ("Mask black background", yes[s.mask_black_bg]),
        ("Mask white background", yes[s.mask_white_bg]),
        ("Mask sky", yes[s.mask_sky]),
        ("Show cameras", yes[s.show_cameras]),
        ("Frame", "all" if frame is None else f"{frame} only"),
        ("Send model-sized images", yes[run.presize]),
        ("Backend", public_backend(run.backend) if run.backend else "—"),
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


def attempts_table(run: VGGTRun) -> None:
    """Each earlier attempt of a retried run: how far it got, how it ended, when."""
    if not run.attempts:
        return
    rows = [
        "| Attempt | Ended | Reached | Started | Finished | Error |",
        "|---|---|---|---|---|---|",
    ]
    for a in reversed(run.attempts):
        error = md_escape(a.error.splitlines()[0]) if a.error else "—"
        rows.append(
            f"| {a.number} | {a.status.value} | {a.reached.value} | {fmt_time(a.started_at)} "
            f"| {fmt_time(a.finished_at)} | {error} |"
        )
    st.markdown(f"**Earlier attempts** (this is attempt {run.attempt})")
    st.markdown("\n".join(rows))


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
                    ctx.service.delete(run_id)
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
        run = ctx.service.get(run_id)
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
            run_action(ctx.service.retry, run.run_id, f"Started {run.run_id} again.")
        if run.is_active and st.button(
            "Cancel", key=f"cancel_{run.run_id}", icon=":material/stop:"
        ):
            run_action(ctx.service.cancel, run.run_id, f"Cancelling {run.run_id}.")
        if (
            run.status == RunStatus.queued
            and run.submitted_at is None
            and st.button("Start", key=f"start_{run.run_id}", icon=":material/play_arrow:")
        ):
            run_action(ctx.service.start, run.run_id, f"Started {run.run_id}.")
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
        run = ctx.service.get(run_id)
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
    parent_link(run)
    left, right = st.columns([3, 2], gap="large")
    chosen = None
    with left:
        if run.status == RunStatus.completed:
            chosen = version_picker(run, key="detail_version")
            preview(
                ctx.service,
                run,
                ctx.settings.preview_points,
                key=f"detail_preview_{run_id}_{chosen.number if chosen else 0}",
                version=chosen,
            )
            render_status(run)
            if chosen is not None:
                rerender_form(ctx.service, run, chosen)
        elif not run.is_active:
            st.info("No 3D model: the run did not complete.")
    with right:
        if run.status == RunStatus.completed:
            st.markdown("**Downloads**")
            with st.container(horizontal=True):
                downloads(ctx.service, run, chosen)
            export_panel(ctx.service, run, chosen)
            add_to_compare(run, chosen)
        saving = upload_saving(run)
        if saving:
            st.markdown(f"**Upload** · {saving}")
        shown = f" (version {chosen.number})" if chosen is not None and chosen.number > 1 else ""
        st.markdown(f"**Settings**{shown}")
        settings_table(run, chosen)
        st.markdown("**Timings**")
        timings_table(run)
        versions_table(run)
        attempts_table(run)
    with st.expander(f"Images ({len(run.images)})", expanded=not run.is_active):
        run_thumbnails(ctx.service, run_id)
