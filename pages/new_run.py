"""New run: upload photos or a video, pick the VGGT settings, reconstruct, follow the runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

import ui
from vggt_core import (
    ImagesRejected,
    RunStatus,
    VGGTError,
    VGGTSettings,
    VideoRejected,
    upload_limit_mb,
)

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

HELP_PHOTOS = (
    "Photos of one scene from different viewpoints (2–50 work well; one also works). "
    "JPEG, PNG, WebP, BMP or TIFF. Frames are used in the order of their file names."
)
HELP_VIDEO = (
    "One clip of the scene (MP4, MOV, WebM or MKV). Frames are taken here, the first one and "
    "then one at each interval, and sent as photos; the clip is kept with the run."
)
HELP_FPS = "How many frames to keep per second of the clip: 1 keeps one a second."
HELP_CONF = (
    "A percentile of the model's own confidence in each point, not a score: 50 drops the least "
    "confident half of the points, 0 keeps them all, 90 keeps only the most confident tenth. "
    "Raise it to remove noisy, floating points; lower it to fill holes."
)
HELP_MODE = (
    "Which part of VGGT builds the points. Depthmap and Camera Branch: each frame's depth map "
    "is unprojected with the predicted cameras; usually cleaner. Pointmap Branch: the model's "
    "direct 3D point head; try it when the cameras look wrong."
)
HELP_BLACK = "Drop points whose colour is near black, e.g. a dark studio backdrop or vignetting."
HELP_WHITE = "Drop points whose colour is near white, e.g. a white table, sheet or light box."
HELP_SKY = "Drop points a sky detector marks as sky: outdoor scenes otherwise get a far-away shell."
HELP_CAMS = "Draw a small cone for each photo's predicted camera position in the 3D model."
HELP_PRESIZE = (
    "Resizes each photo on your machine to exactly the 518-px-wide input VGGT uses and sends it "
    "losslessly (PNG), so the results are identical and uploads much smaller. Turn it off to "
    "send the original files."
)

ui.require_entrypoint()
ctx = ui.context()
st.title("New reconstruction")
ui.show_flashes()

# Runs first: after Reconstruct the live card is where the eye is, not below the fold; every
# active run is shown (from storage), so a reload or another tab loses none.
active = ctx.service.active_runs()
finished = [r for r in ui.session_runs(ctx.service) if not r.is_active]
if active or finished:
    st.subheader("Runs", anchor=False)
    ui.live_runs(tuple(r.run_id for r in active))
    newest_completed = next((r.run_id for r in finished if r.status == RunStatus.completed), None)
    for run in finished:
        ui.finished_card(ctx, run, show_preview=run.run_id == newest_completed)
    st.divider()

notice = ui.quota_notice(ctx.settings)
if notice is not None:
    if ctx.service.run_count() == 0:
        st.info(notice, icon=":material/info:")
    else:
        with st.expander("What a run costs on the public Space"):
            st.markdown(notice)

generation = st.session_state.setdefault("vs_uploader_gen", 0)
left, right = st.columns([3, 2], gap="large")
video: UploadedFile | None = None
video_ok = False
fps = 1.0

with left:
    st.subheader("1 · Photos or a video", anchor=False)
    source = st.segmented_control(
        "Source", ["Photos", "Video"], default="Photos", key="vs_source", label_visibility="hidden"
    )
    files: list[UploadedFile] = []
    if source == "Video":
        video = st.file_uploader(
            "A video of the scene",
            type=ui.VIDEO_TYPES,
            key=f"vs_video_{generation}",
            help=HELP_VIDEO,
            max_upload_size=upload_limit_mb(ctx.settings.max_video_bytes),
        )
        fps = float(
            st.number_input(
                "Frames per second to keep",
                min_value=0.01,
                max_value=60.0,
                value=1.0,
                step=0.5,
                key="vs_fps",
                help=HELP_FPS,
            )
        )
        if video is not None:
            found = ui.review_video(video, fps, ctx.service)
            if found.refused is not None:
                st.error(
                    f"**{ui.md_escape(video.name)}** is refused: {ui.md_escape(found.refused)}.",
                    icon=":material/block:",
                )
            else:
                video_ok = True
                facts = [ui.md_escape(video.name), ui.fmt_bytes(video.size)]
                if found.duration_s is not None:
                    facts.append(f"{found.duration_s:.1f} s at {found.clip_fps or 0:g} fps")
                count = found.frames
                sampled = (
                    f"**{count} frame{'s' if count != 1 else ''}** will be sampled "
                    f"({fps:g} a second, the first frame kept)."
                    if count is not None
                    else "Its length is not recorded: frames are counted while sampling."
                )
                st.caption(" · ".join(facts) + ". " + sampled)
        else:
            st.caption(
                f"One clip, up to {ctx.settings.max_video_seconds:g} s and "
                f"{upload_limit_mb(ctx.settings.max_video_bytes)} MB; at most "
                f"{ctx.service.video_limits.max_frames} frames are kept."
            )
    else:
        files = (
            st.file_uploader(
                "Photos of the scene",
                type=ui.IMAGE_TYPES,
                accept_multiple_files=True,
                key=f"vs_photos_{generation}",
                help=HELP_PHOTOS,
                # The widget's limit is ours, in its own unit: both say the same number of MB.
                max_upload_size=upload_limit_mb(ctx.settings.max_image_bytes),
            )
            or []
        )
    review = ui.review_uploads(files, ctx.service)
    for name, reason in review.rejected:
        st.error(
            f"**{ui.md_escape(name)}** is refused: {ui.md_escape(reason)}.", icon=":material/block:"
        )
    if review.accepted:
        total = sum(f.size for f in review.accepted)
        st.caption(
            f"{len(review.accepted)} image{'s' if len(review.accepted) != 1 else ''} ready "
            f"({ui.fmt_bytes(total)})"
            + (f"; {len(review.rejected)} refused file(s) left out." if review.rejected else ".")
        )
        ui.upload_thumbnails(review.accepted)
    elif not files and source != "Video":
        st.caption(
            f"Up to {ctx.settings.max_images_per_run} images a run, "
            f"{upload_limit_mb(ctx.settings.max_image_bytes)} MB each."
        )

with right:
    st.subheader("2 · Settings", anchor=False)
    conf = st.slider(
        "Confidence threshold (percentile)", 0, 100, 50, step=1, key="vs_conf", help=HELP_CONF
    )
    mode = st.radio(
        "Prediction mode",
        ["depth", "pointmap"],
        format_func=ui.MODE_LABELS.__getitem__,
        captions=["Depth maps + predicted cameras; usually cleaner", "The direct 3D point head"],
        key="vs_mode",
        help=HELP_MODE,
    )
    mask_black = st.checkbox("Mask black background", key="vs_mask_black", help=HELP_BLACK)
    mask_white = st.checkbox("Mask white background", key="vs_mask_white", help=HELP_WHITE)
    mask_sky = st.checkbox("Mask sky", key="vs_mask_sky", help=HELP_SKY)
    show_cams = st.checkbox("Show cameras", value=True, key="vs_show_cams", help=HELP_CAMS)
    presize = st.toggle(
        "Send model-sized images", value=ctx.settings.presize, key="vs_presize", help=HELP_PRESIZE
    )

ready = video_ok if source == "Video" else bool(review.accepted)
clicked = st.button(
    "Reconstruct",
    type="primary",
    icon=":material/view_in_ar:",
    disabled=not ready,
    help=None if ready else "Add at least one image, or a video, first.",
)
if clicked and ready:
    settings = VGGTSettings(
        conf_threshold=float(conf),
        prediction_mode=mode or "depth",
        mask_black_bg=mask_black,
        mask_white_bg=mask_white,
        mask_sky=mask_sky,
        show_cameras=show_cams,
    )
    try:
        if video is not None:
            with st.spinner("Sampling the video's frames…"):
                run = ctx.service.submit_video(
                    settings, video.name, video.getvalue(), fps=fps, presize=presize
                )
        else:
            with st.spinner("Storing the images…"):
                run = ctx.service.submit(
                    settings, [(f.name, f.getvalue()) for f in review.accepted], presize=presize
                )
    except VideoRejected as exc:
        st.error(ui.md_escape(str(exc)), icon=":material/block:")
    except ImagesRejected as exc:
        st.error("No run was created: the images were refused.")
        for problem in exc.problems:
            st.error(ui.md_escape(str(problem)), icon=":material/block:")
    except VGGTError as exc:
        st.error(ui.md_escape(f"No run was created: {exc}"), icon=":material/block:")
    else:
        ui.remember_run(run.run_id)
        ui.forget_uploads(review.accepted if video is None else [video])  # the run holds them
        st.session_state["vs_uploader_gen"] = generation + 1  # a fresh, empty uploader
        origin = f" sampled from {run.video.file_name}" if run.video is not None else ""
        ui.flash(f"Started run {run.run_id} with {len(run.images)} images{origin}.", "success")
        st.rerun()
