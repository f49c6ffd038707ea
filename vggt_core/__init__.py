"""VGGT Studio's core: run storage, the Space adapter and the background runner (no Streamlit)."""

from .config import Settings, describe_config_error, load_settings
from .images import ImageRejected, check_image
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    RunProgress,
    RunStatus,
    UploadStats,
    VGGTRun,
    VGGTSettings,
    describe_validation_error,
)
from .runner import RunExecutor, space_from_settings
from .space import CheckReport, SpaceError, VGGTSpace
from .storage import (
    BrokenRun,
    ImagesRejected,
    InvalidRunId,
    RunBusy,
    RunNotFound,
    RunPage,
    RunStore,
    StorageError,
    is_valid_run_id,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "Artifacts",
    "BrokenRun",
    "CheckReport",
    "ImageRejected",
    "ImagesRejected",
    "InvalidRunId",
    "RunBusy",
    "RunExecutor",
    "RunNotFound",
    "RunPage",
    "RunProgress",
    "RunStatus",
    "RunStore",
    "Settings",
    "SpaceError",
    "StorageError",
    "UploadStats",
    "VGGTRun",
    "VGGTSettings",
    "VGGTSpace",
    "check_image",
    "describe_config_error",
    "describe_validation_error",
    "is_valid_run_id",
    "load_settings",
    "space_from_settings",
]
