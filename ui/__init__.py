"""Shared widgets of the VGGT Studio pages (UI only: all logic lives in vggt_core)."""

from __future__ import annotations

from .app_context import (
    AppContext,
    context,
    disk_usage,
)
from .common import (
    HISTORY_PAGE,
    IMAGE_TYPES,
    MODE_LABELS,
    NEW_RUN_PAGE,
    STATUS_STYLE,
    flash,
    fmt_bytes,
    fmt_duration,
    fmt_time,
    forget_shown_flashes,
    md_escape,
    polling_fragment,
    show_flashes,
)
from .compare import comparison
from .detail import (
    run_detail,
)
from .entrypoint import navigation_assumed, require_entrypoint
from .images import (
    VIDEO_TYPES,
    forget_uploads,
    review_uploads,
    review_video,
    upload_thumbnails,
)
from .quota import quota_notice
from .runs import (
    finished_card,
    live_runs,
    remember_run,
    session_runs,
)
from .status import (
    status_label,
)

__all__ = [
    "HISTORY_PAGE",
    "IMAGE_TYPES",
    "MODE_LABELS",
    "NEW_RUN_PAGE",
    "STATUS_STYLE",
    "VIDEO_TYPES",
    "AppContext",
    "comparison",
    "context",
    "disk_usage",
    "finished_card",
    "flash",
    "fmt_bytes",
    "fmt_duration",
    "fmt_time",
    "forget_shown_flashes",
    "forget_uploads",
    "live_runs",
    "md_escape",
    "navigation_assumed",
    "polling_fragment",
    "quota_notice",
    "remember_run",
    "require_entrypoint",
    "review_uploads",
    "review_video",
    "run_detail",
    "session_runs",
    "show_flashes",
    "status_label",
    "upload_thumbnails",
]
