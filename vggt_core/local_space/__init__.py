"""A local Gradio app with the facebook/vggt Space's API and a fast deterministic model stand-in."""

from ..glb import predictions_to_glb
from ._app import DEPTH_MODE, POINTMAP_MODE
from ._glb_writer import glb_file_name
from ._handlers import NO_TARGET_DIR
from ._model import PREDICTION_KEYS, load_and_preprocess_images, run_stand_in_model
from ._options import ZEROGPU_QUOTA_ERROR, StandInOptions
from ._process import (
    LocalSpace,
    LocalSpaceProcess,
    build_parser,
    free_port,
    main,
    spawn_local_space,
)
from ._samples import write_sample_images

__all__ = [
    "DEPTH_MODE",
    "NO_TARGET_DIR",
    "POINTMAP_MODE",
    "PREDICTION_KEYS",
    "ZEROGPU_QUOTA_ERROR",
    "LocalSpace",
    "LocalSpaceProcess",
    "StandInOptions",
    "build_parser",
    "free_port",
    "glb_file_name",
    "load_and_preprocess_images",
    "main",
    "predictions_to_glb",
    "run_stand_in_model",
    "spawn_local_space",
    "write_sample_images",
]
