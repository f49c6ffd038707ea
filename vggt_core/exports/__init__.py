"""Exports of a VGGT result: COLMAP, cameras JSON, nerfstudio, PLY, and a whole run as a zip."""

from ._bundle import EXPORT_SUFFIXES, ExportFormat, export_file
from ._colmap import export_colmap
from ._common import Photo, model_to_original
from ._formats import export_cameras_json, export_nerfstudio, export_points_ply, export_run_zip

__all__ = [
    "EXPORT_SUFFIXES",
    "FORMATS",
    "ExportFormat",
    "Photo",
    "export_cameras_json",
    "export_colmap",
    "export_file",
    "export_nerfstudio",
    "export_points_ply",
    "export_run_zip",
    "model_to_original",
]

FORMATS = ("colmap", "cameras", "ply", "nerfstudio")
