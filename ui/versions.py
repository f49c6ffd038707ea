"""A completed run's versions: the picker, the re-render form and the re-render's live status."""

from __future__ import annotations

import streamlit as st

from vggt_core import (
    RenderStatus,
    RunVersion,
    StudioService,
    VGGTError,
    VGGTRun,
    VGGTSettings,
)

from .app_context import context
from .common import HISTORY_PAGE, MODE_LABELS, flash, fmt_time, md_escape, polling_fragment

RERUN_KINDS = frozenset({"forgotten", "unsupported"})


def version_label(version: RunVersion) -> str:
    """`v3 · conf 80 · depth · frame 2 · 41,203 points` for a version."""
    s = version.settings
    parts = [f"v{version.number}", f"conf {s.conf_threshold:g}", s.prediction_mode]
    if version.frame is not None:
        parts.append(f"frame {version.frame}")
    masks = [n for n, on in (("black", s.mask_black_bg), ("white", s.mask_white_bg)) if on]
    if s.mask_sky:
        masks.append("sky")
    if masks:
        parts.append("mask " + "+".join(masks))
    if not s.show_cameras:
        parts.append("no cameras")
    if version.points is not None:
        parts.append(f"{version.points:,} points")
    if version.number == 1:
        parts.append("original")
    return " · ".join(parts)


def version_picker(run: VGGTRun, *, key: str) -> RunVersion | None:
    """Choose one of the run's rendered versions (the newest by default); the chosen one."""
    done = [v for v in run.all_versions if v.status is RenderStatus.completed and v.glb]
    if len(done) <= 1:
        return done[0] if done else None
    newest_first = list(reversed(done))
    numbers = [v.number for v in newest_first]
    state_key = f"{key}_{run.run_id}_{numbers[0]}"  # a new version becomes the default again
    number = st.selectbox(
        "Version",
        numbers,
        format_func=lambda n: version_label(next(v for v in done if v.number == n)),
        key=state_key,
        help="Every re-render is kept as a version; the preview and downloads follow this one.",
    )
    return next(v for v in done if v.number == number)


def _render_status_body(run_id: str) -> int | None:
    ctx = context()
    run = ctx.service.get(run_id)
    render = run.render
    if render is not None:
        with st.container(horizontal=True, vertical_alignment="center"):
            word = (
                "Waiting to re-render" if render.status is RenderStatus.queued else "Re-rendering"
            )
            st.info(f"{word} version {render.number} ({version_label(render)}).")
            if st.button("Cancel re-render", key=f"cancel_render_{run_id}", icon=":material/stop:"):
                try:
                    ctx.service.cancel_render(run_id)
                except VGGTError as exc:
                    flash(str(exc), "error")
                st.rerun()
        return render.number
    last = run.versions[-1] if run.versions else None
    if last is not None and last.status is RenderStatus.failed:
        _failed_render(ctx.service, run, last)
    elif last is not None and last.status is RenderStatus.cancelled:
        st.caption(f"The re-render of version {last.number} was cancelled.")
    return None


def _failed_render(service: StudioService, run: VGGTRun, version: RunVersion) -> None:
    st.warning(md_escape(version.error or "The re-render failed."), icon=":material/warning:")
    if version.error_kind in RERUN_KINDS and st.button(
        "Re-run with these settings",
        key=f"rerun_{run.run_id}_{version.number}",
        icon=":material/replay:",
        help="A new run with the same photos and these settings, linked to this one. "
        "It runs the model again (GPU quota).",
    ):
        try:
            child = service.rerun(run.run_id, version.settings)
        except VGGTError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Started {child.run_id} from run {run.run_id}'s photos.", "success")
            st.query_params["run"] = child.run_id
        st.rerun()


def render_status(run: VGGTRun) -> None:
    """The run's re-render, live while one waits or works; a failed one says why."""
    active = run.render.number if run.render is not None else None
    polling_fragment("render_status", _render_status_body, active, run.run_id)


def rerender_form(service: StudioService, run: VGGTRun, base: RunVersion) -> None:
    """New settings for the run, rendered as a new version without the GPU."""
    rid = run.run_id
    s = base.settings
    with st.expander("Re-render with other settings (free: no GPU, no upload)"):
        with st.form(key=f"rerender_{rid}", border=False):
            conf = st.slider(
                "Confidence threshold (percentile)", 0, 100, round(s.conf_threshold), step=1
            )
            mode = st.radio(
                "Prediction mode",
                list(MODE_LABELS),
                index=list(MODE_LABELS).index(s.prediction_mode),
                format_func=MODE_LABELS.__getitem__,
                horizontal=True,
            )
            frames = [None, *range(len(run.images))]
            names = sorted(run.images)
            frame = st.selectbox(
                "Frame",
                frames,
                index=frames.index(base.frame) if base.frame in frames else 0,
                format_func=lambda f: "All frames" if f is None else f"{f}: {names[f]}",
                help="Show the points of one photo only.",
            )
            with st.container(horizontal=True):
                black = st.checkbox("Mask black background", s.mask_black_bg)
                white = st.checkbox("Mask white background", s.mask_white_bg)
                sky = st.checkbox("Mask sky", s.mask_sky)
                cams = st.checkbox("Show cameras", s.show_cameras)
            if run.upload is not None and run.upload.files_resized and not s.mask_sky:
                st.caption(
                    "This run sent model-sized photos, so a sky mask turned on now is computed "
                    "from those, not from your originals."
                )
            pressed = st.form_submit_button("Re-render", icon=":material/refresh:")
        if pressed:
            settings = VGGTSettings(
                conf_threshold=float(conf),
                prediction_mode=mode,
                mask_black_bg=black,
                mask_white_bg=white,
                mask_sky=sky,
                show_cameras=cams,
            )
            try:
                version = service.rerender(rid, settings, frame=frame)
            except VGGTError as exc:
                flash(str(exc), "error")
            else:
                flash(f"Re-rendering run {rid} as version {version.number}.", "info")
            st.rerun()


def versions_table(run: VGGTRun) -> None:
    """Every version with its settings, points, time and outcome, newest first."""
    versions = run.all_versions
    if len(versions) <= 1:
        return
    rows = ["| Version | Settings | Made | Outcome |", "|---|---|---|---|"]
    for v in reversed(versions):
        outcome = v.status.value if v.status is not RenderStatus.failed else "failed"
        if v.status is RenderStatus.completed:
            outcome = {"reconstruction": "reconstructed", "local": "here, offline"}.get(
                v.source, "by the backend"
            )
        label = md_escape(version_label(v).split(" · ", 1)[-1])
        rows.append(f"| v{v.number} | {label} | {fmt_time(v.finished_at)} | {outcome} |")
    st.markdown("**Versions**")
    st.markdown("\n".join(rows))


def parent_link(run: VGGTRun) -> None:
    """Where a re-run came from."""
    if run.parent_run_id:
        st.page_link(
            HISTORY_PAGE,
            label=f"Re-run of {run.parent_run_id}",
            icon=":material/call_split:",
            query_params={"run": run.parent_run_id},
        )
