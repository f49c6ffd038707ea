"""VGGT's GLB: built from predictions as the Space does, read back fast, previewed, exported."""

from ._build import PREDICTION_KEYS, load_predictions, predictions_to_glb, rot_x, rot_y, rot_z
from ._export import export_ply
from ._preview import DEFAULT_PREVIEW_POINTS, preview_figure, preview_spec, sample_indices
from ._reader import parse_glb, read_glb
from ._scene import GLBError, GLBScene

__all__ = [
    "DEFAULT_PREVIEW_POINTS",
    "PREDICTION_KEYS",
    "GLBError",
    "GLBScene",
    "export_ply",
    "load_predictions",
    "parse_glb",
    "predictions_to_glb",
    "preview_figure",
    "preview_spec",
    "read_glb",
    "rot_x",
    "rot_y",
    "rot_z",
    "sample_indices",
]
