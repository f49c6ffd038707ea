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
    public_backend,
)
from .glb import GLBError, export_ply, preview_figure, read_glb
from .images import check_image, upload_limit_mb
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
    describe_validation_error,
)
from .runner import interrupted_message
from .service import StudioService, space_for
from .space import CheckReport, VGGTSpace
from .storage import BrokenRun, RunPage, RunStore, is_valid_run_id

__all__ = [
    "ACTIVE_STATUSES",
    "COMPARED_FIELDS",
    "FINAL_STATUSES",
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
    "check_image",
    "describe_config_error",
    "describe_validation_error",
    "export_ply",
    "interrupted_message",
    "is_valid_run_id",
    "load_config",
    "preview_figure",
    "public_backend",
    "read_glb",
    "space_for",
    "upload_limit_mb",
]
