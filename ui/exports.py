"""Exports of a run's version on the History page: COLMAP, cameras, nerfstudio, the whole run."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from vggt_core import RunVersion, StudioService, VGGTError, VGGTRun

from .common import flash, md_escape

FORMATS: dict[str, str] = {
    "colmap": "COLMAP text model + images (zip)",
    "cameras": "Cameras as JSON (OpenCV and OpenGL)",
    "nerfstudio": "nerfstudio transforms.json + images (zip)",
    "run": "The whole run: metadata, images, every version, exports (zip)",
}
MIME = {".zip": "application/zip", ".json": "application/json"}


def _prepare(service: StudioService, run_id: str, fmt: str, number: int) -> Path:
    if fmt == "run":
        return service.export_run(run_id)
    return service.export(run_id, fmt, version=number)  # type: ignore[arg-type]


def export_panel(service: StudioService, run: VGGTRun, version: RunVersion | None) -> None:
    """Pick a format, prepare it (made once per version), download it; or why it cannot be."""
    if version is None:
        return
    rid, number = run.run_id, version.number
    with st.expander("Exports for COLMAP, nerfstudio and other tools"):
        fmt = st.selectbox(
            "Format",
            list(FORMATS),
            format_func=FORMATS.__getitem__,
            key=f"export_format_{rid}",
            help="Cameras come from the GLB's camera cones (exact for the depth branch); "
            "see the README's Exports section for what each holds.",
        )
        key = f"export_ready_{rid}_{number}_{fmt}"
        if st.button("Prepare", key=f"export_go_{rid}_{number}_{fmt}", icon=":material/build:"):
            st.session_state.pop(key, None)
            try:
                with st.spinner("Preparing the export…"):
                    st.session_state[key] = str(_prepare(service, rid, fmt, number))
            except VGGTError as exc:
                st.session_state[key] = exc
        ready = st.session_state.get(key)
        if isinstance(ready, VGGTError):
            _failed(service, run, version, str(ready))
        elif isinstance(ready, str) and Path(ready).is_file():
            path = Path(ready)
            st.download_button(
                f"Download {path.name}",
                data=path.read_bytes,
                file_name=path.name if fmt != "run" else f"{rid}.zip",
                mime=MIME.get(path.suffix, "application/octet-stream"),
                key=f"export_dl_{rid}_{number}_{fmt}",
                icon=":material/download:",
                on_click="ignore",
            )


def _failed(service: StudioService, run: VGGTRun, version: RunVersion, message: str) -> None:
    st.error(md_escape(message), icon=":material/error:")
    if version.settings.show_cameras:
        return
    if st.button(
        "Re-render with cameras on",
        key=f"export_cams_{run.run_id}_{version.number}",
        icon=":material/photo_camera:",
        help="A free re-render of this version with the camera cones, which the exports need.",
    ):
        settings = version.settings.model_copy(update={"show_cameras": True})
        try:
            again = service.rerender(run.run_id, settings, frame=version.frame)
        except VGGTError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Re-rendering run {run.run_id} with cameras as version {again.number}.")
        st.rerun()
