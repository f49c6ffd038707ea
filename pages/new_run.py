"""New run: upload photos, pick the VGGT settings, reconstruct, follow this session's runs."""

from __future__ import annotations

import streamlit as st

import ui
from vggt_core import ImagesRejected, RunStatus, VGGTError, VGGTSettings, upload_limit_mb

HELP_PHOTOS = (
    "Photos of one scene from different viewpoints (2–50 work well; one also works). "
    "JPEG, PNG, WebP, BMP or TIFF. Frames are used in the order of their file names."
)
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

generation = st.session_state.setdefault("vs_uploader_gen", 0)
left, right = st.columns([3, 2], gap="large")

with left:
    st.subheader("1 · Photos", anchor=False)
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
    elif not files:
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

clicked = st.button(
    "Reconstruct",
    type="primary",
    icon=":material/view_in_ar:",
    disabled=not review.accepted,
    help=None if review.accepted else "Add at least one image first.",
)
if clicked and review.accepted:
    settings = VGGTSettings(
        conf_threshold=float(conf),
        prediction_mode=mode or "depth",
        mask_black_bg=mask_black,
        mask_white_bg=mask_white,
        mask_sky=mask_sky,
        show_cameras=show_cams,
    )
    try:
        with st.spinner("Storing the images…"):
            run = ctx.service.submit(
                settings, [(f.name, f.getvalue()) for f in review.accepted], presize=presize
            )
    except ImagesRejected as exc:
        st.error("No run was created: the images were refused.")
        for problem in exc.problems:
            st.error(ui.md_escape(str(problem)), icon=":material/block:")
    except VGGTError as exc:
        st.error(ui.md_escape(f"No run was created: {exc}"), icon=":material/block:")
    else:
        ui.remember_run(run.run_id)
        st.session_state["vs_uploader_gen"] = generation + 1  # a fresh, empty uploader
        ui.flash(f"Started run {run.run_id} with {len(run.images)} images.", "success")
        st.rerun()
