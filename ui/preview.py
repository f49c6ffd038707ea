"""The 3D preview of a run's GLB and its downloads (GLB, predictions, PLY)."""

from __future__ import annotations

import functools
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from vggt_core import (
    GLBError,
    RunVersion,
    StorageError,
    StudioService,
    VGGTRun,
    export_ply,
    read_glb,
)
from vggt_core.glb import preview_spec

from .common import md_escape

# --- 3D preview and downloads ---------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What a drawn preview shows."""

    shown: int
    total: int
    cameras: int


# Positions go to the browser on a grid of this many steps along the scene's largest extent:
# 1/4096 of the scene is far below a pixel of the 560-px chart.
GRID_STEPS = 4096
# Phones and tablets draw a quarter of the points: WebGL there chokes on hundreds of thousands.
MOBILE_SHARE = 4

# GLB files (path, mtime, size) already read by the preview and whether they read, so the PLY
# offer beside it does not read the file a second time.
_READ: OrderedDict[tuple[str, int, int], bool] = OrderedDict()
_READ_LOCK = threading.Lock()


def _remember(key: tuple[str, int, int], readable: bool) -> None:
    with _READ_LOCK:
        _READ[key] = readable
        while len(_READ) > 64:
            _READ.popitem(last=False)


@functools.cache
def _ready_figure_type() -> type[Any]:
    """go.Figure made to serialise from a ready dict (plotly imported on first use)."""
    import plotly.graph_objects as go

    class ReadyFigure(go.Figure):  # type: ignore[misc]  # plotly ships no type hints
        """A figure st.plotly_chart serialises from a ready dict: orjson writes its numpy arrays
        as they are, where Figure.to_dict would deep-copy them and turn them into base64."""

        def __init__(self, spec: dict[str, Any]) -> None:
            super().__init__()
            self._spec = spec

        def to_dict(self) -> dict[str, Any]:
            """The ready figure dict."""
            return self._spec

    return ReadyFigure


@st.cache_resource(max_entries=8, show_spinner="Reading the 3D model…")
def _draw(path: str, mtime_ns: int, size: int, budget: int, key: str) -> Preview:
    # Streamlit stores the chart drawn here and replays it on every later call with the same
    # arguments: the GLB is read and the chart serialised once per (file, budget), not per rerun.
    # mtime and size are in the key so a retried run's new GLB is never shown from the cache.
    try:
        scene = read_glb(path)
    except GLBError:
        _remember((path, mtime_ns, size), False)
        raise
    _remember((path, mtime_ns, size), True)
    spec = preview_spec(scene, budget=budget, grid=GRID_STEPS)
    del scene
    st.plotly_chart(
        _ready_figure_type()(spec),
        key=key,
        theme=None,
        height=560,
        config={"displaylogo": False, "scrollZoom": True},
    )
    meta = spec["layout"]["meta"]
    return Preview(meta["shown_points"], meta["total_points"], meta["cameras"])


def browser_budget(budget: int) -> int:
    """The point budget for the browser asking: a quarter of it on a phone or tablet."""
    mobile = st.session_state.get("vs_mobile_browser")
    if mobile is None:  # asked once a session: the headers cost milliseconds on every rerun
        try:
            agent = st.context.headers.get("User-Agent", "") or ""
        except (AttributeError, RuntimeError):
            agent = ""
        mobile = "Mobi" in agent or "Android" in agent or "iPad" in agent
        st.session_state["vs_mobile_browser"] = mobile
    return max(1_000, budget // MOBILE_SHARE) if mobile else budget


def preview(
    service: StudioService,
    run: VGGTRun,
    budget: int,
    *,
    key: str,
    version: RunVersion | None = None,
) -> None:
    """A version's GLB (the newest by default) as an interactive 3D plot of at most `budget`
    points (fewer on a phone), or why it cannot be."""
    try:
        path = service.version_glb(run.run_id, version.number if version else None)
        if path is None:
            raise FileNotFoundError
        info = path.stat()
    except (FileNotFoundError, StorageError):
        st.warning("This run has no 3D model file (its GLB is missing).")
        return
    except OSError as exc:
        st.warning(md_escape(f"The 3D model cannot be read: {exc.strerror}."))
        return
    try:
        shown = _draw(str(path), info.st_mtime_ns, info.st_size, browser_budget(budget), key)
    except GLBError as exc:
        st.warning(md_escape(f"The 3D model cannot be shown: {exc}"))
        return
    except (MemoryError, OSError, ValueError) as exc:
        st.warning(md_escape(f"The 3D model cannot be shown ({type(exc).__name__}: {exc})."))
        return
    note = (
        f"A sample of {shown.shown:,} of the {shown.total:,} points; downloads hold them all. "
        if shown.shown < shown.total
        else ""
    )
    st.caption(note + "Drag to orbit, scroll to zoom, double-click to reset the view.")


@st.cache_data(max_entries=64, show_spinner=False)
def _glb_readable(path: str, mtime_ns: int, size: int) -> bool:
    with _READ_LOCK:
        known = _READ.get((path, mtime_ns, size))
    if known is not None:
        return known
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


def downloads(service: StudioService, run: VGGTRun, version: RunVersion | None = None) -> None:
    """Download buttons for a version's GLB (the newest by default), its PLY and the run's
    predictions; files are read only when clicked."""
    rid = run.run_id
    number = version.number if version is not None else None
    glb = service.version_glb(rid, number)
    shown = run.version(number)
    stem = rid if shown is None or shown.number == 1 else f"{rid}_v{shown.number}"
    tag = "" if shown is None else f"_v{shown.number}"
    if glb is not None:
        st.download_button(
            "Download GLB",
            data=glb.read_bytes,
            file_name=f"{stem}.glb",
            mime="model/gltf-binary",
            key=f"dl_glb_{rid}{tag}",
            icon=":material/download:",
            on_click="ignore",
            help="This version as the backend made it (points and camera cones).",
        )
    predictions = service.artifact(rid, "predictions")
    if predictions is not None:
        st.download_button(
            "Download predictions.npz",
            data=predictions.read_bytes,
            file_name=f"{rid}_predictions.npz",
            mime="application/octet-stream",
            key=f"dl_npz_{rid}",
            icon=":material/data_array:",
            on_click="ignore",
            help="The model's raw outputs: depth, confidence, world points, cameras.",
        )
    if glb is None:
        return
    info = glb.stat()
    # A PLY is made from the GLB, so it is offered only when the GLB reads.
    if _glb_readable(str(glb), info.st_mtime_ns, info.st_size):
        st.download_button(
            "Download PLY",
            data=lambda: _ply_bytes(glb),
            file_name=f"{stem}.ply",
            mime="application/octet-stream",
            key=f"dl_ply_{rid}{tag}",
            icon=":material/scatter_plot:",
            on_click="ignore",
            help="The points only, as a binary PLY for MeshLab, CloudCompare or Open3D.",
        )
