"""One export of a GLB as one file to download: the folder formats zipped, written whole."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from .._atomic import TMP_PREFIX, commit_file
from ..cameras import Mode
from ._colmap import export_colmap
from ._common import PathLike
from ._formats import export_cameras_json, export_nerfstudio, export_points_ply, export_run_zip

__all__ = ["EXPORT_SUFFIXES", "ExportFormat", "export_file"]

ExportFormat = Literal["colmap", "cameras", "nerfstudio", "ply"]
EXPORT_SUFFIXES: dict[str, str] = {
    "colmap": "_colmap.zip",
    "cameras": "_cameras.json",
    "nerfstudio": "_nerfstudio.zip",
    "ply": ".ply",
}


def export_file(
    fmt: ExportFormat,
    glb: PathLike,
    out_file: PathLike,
    *,
    predictions: PathLike | None = None,
    images_dir: PathLike | None = None,
    mode: Mode | None = None,
) -> Path:
    """Write one export to `out_file` (a zip for COLMAP and nerfstudio); nothing on failure."""
    target = Path(out_file)
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX, dir=target.parent) as work:
        folder = Path(work) / "export"
        if fmt == "ply":
            written = export_points_ply(glb, folder)
        elif fmt == "cameras":
            written = export_cameras_json(
                glb, folder, predictions=predictions, images_dir=images_dir, mode=mode
            )
        else:
            writer = export_colmap if fmt == "colmap" else export_nerfstudio
            writer(glb, folder, predictions=predictions, images_dir=images_dir, mode=mode)
            written = export_run_zip(folder, Path(work) / "export.zip")
        commit_file(written, target, durable=False)  # the temporary folder is beside it
    return target
