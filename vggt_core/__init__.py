"""VGGT Studio's core: the service every face calls, run storage, the Space adapter, the runner.

No Streamlit here: the pages, the command line and the REST API are thin faces over
`StudioService`.
"""

from .compare import COMPARED_FIELDS, CompareItem, Comparison
from .config import StudioConfig, describe_config_error, load_config
from .errors import (
    ConfigError,
    ImageRejected,
    ImagesRejected,
    InvalidRunId,
    LockTimeout,
    RunBusy,
    RunNotFound,
    SpaceCancelled,
    SpaceError,
    StorageError,
    VGGTError,
    VideoRejected,
    public_backend,
)
from .glb import GLBError, export_ply, preview_figure, read_glb
from .images import check_image, exif_rotation, upload_limit_mb
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    Attempt,
    RenderStatus,
    RunProgress,
    RunStatus,
    RunVersion,
    UploadStats,
    VGGTRun,
    VGGTSettings,
    VideoSource,
    describe_validation_error,
)
from .runner import interrupted_message
from .service import StudioService, space_for
from .space import CheckReport, VGGTSpace
from .storage import BrokenRun, RunPage, RunStore, is_valid_run_id
from .video import VIDEO_EXTENSIONS, VideoLimits, probe_video

__all__ = [
    "ACTIVE_STATUSES",
    "COMPARED_FIELDS",
    "FINAL_STATUSES",
    "VIDEO_EXTENSIONS",
    "Artifacts",
    "Attempt",
    "BrokenRun",
    "CheckReport",
    "CompareItem",
    "Comparison",
    "ConfigError",
    "GLBError",
    "ImageRejected",
    "ImagesRejected",
    "InvalidRunId",
    "LockTimeout",
    "RenderStatus",
    "RunBusy",
    "RunNotFound",
    "RunPage",
    "RunProgress",
    "RunStatus",
    "RunStore",
    "RunVersion",
    "SpaceCancelled",
    "SpaceError",
    "StorageError",
    "StudioConfig",
    "StudioService",
    "UploadStats",
    "VGGTError",
    "VGGTRun",
    "VGGTSettings",
    "VGGTSpace",
    "VideoLimits",
    "VideoRejected",
    "VideoSource",
    "check_image",
    "describe_config_error",
    "describe_validation_error",
    "exif_rotation",
    "export_ply",
    "interrupted_message",
    "is_valid_run_id",
    "load_config",
    "preview_figure",
    "probe_video",
    "public_backend",
    "read_glb",
    "space_for",
    "upload_limit_mb",
]
