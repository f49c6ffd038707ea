"""Reading the GLB that VGGT writes, fast; a sampled preview figure; PLY export."""

from ._export import export_ply
from ._preview import DEFAULT_PREVIEW_POINTS, preview_figure, sample_indices
from ._reader import parse_glb, read_glb
from ._scene import GLBError, GLBScene

__all__ = [
    "DEFAULT_PREVIEW_POINTS",
    "GLBError",
    "GLBScene",
    "export_ply",
    "parse_glb",
    "preview_figure",
    "read_glb",
    "sample_indices",
]
