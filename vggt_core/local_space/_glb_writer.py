"""The stand-in's GLB files: the Space's names for them, written with the Space's builder."""

from pathlib import Path

import numpy as np

from ..glb import predictions_to_glb
from ._model import sky_mask


def glb_file_name(
    conf_thres: float,
    frame_filter: str,
    mask_black_bg: bool,
    mask_white_bg: bool,
    show_cam: bool,
    mask_sky: bool,
    prediction_mode: str,
) -> str:
    """The GLB name the real demo derives from the settings (it caches by this name)."""
    frame = frame_filter.replace(".", "_").replace(":", "").replace(" ", "_")
    return (
        f"glbscene_{conf_thres}_{frame}_maskb{mask_black_bg}_maskw{mask_white_bg}"
        f"_cam{show_cam}_sky{mask_sky}_pred{prediction_mode.replace(' ', '_')}.glb"
    )


def _write_glb(
    work: Path,
    predictions: dict[str, np.ndarray],
    conf_thres: float,
    frame_filter: str,
    mask_black_bg: bool,
    mask_white_bg: bool,
    show_cam: bool,
    mask_sky: bool,
    prediction_mode: str,
) -> Path:
    """Filter the predictions with these settings and export the GLB into `work`; its path."""
    settings = (mask_black_bg, mask_white_bg, show_cam, mask_sky, prediction_mode)
    glb_path = work / glb_file_name(conf_thres, frame_filter, *settings)
    scene = predictions_to_glb(
        predictions,
        conf_thres=conf_thres,
        filter_by_frames=frame_filter,
        mask_black_bg=mask_black_bg,
        mask_white_bg=mask_white_bg,
        show_cam=show_cam,
        prediction_mode=prediction_mode,
        keep=~sky_mask(predictions["images"]) if mask_sky else None,
    )
    scene.export(file_obj=str(glb_path))
    return glb_path
