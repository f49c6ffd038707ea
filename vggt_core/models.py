"""Pydantic models of a run: its settings, status, progress, artifacts and metadata.json."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "Artifacts",
    "Attempt",
    "RemoteJob",
    "RenderSource",
    "RenderStatus",
    "RunProgress",
    "RunStatus",
    "RunVersion",
    "Timestamp",
    "UploadStats",
    "VGGTRun",
    "VGGTSettings",
    "VideoSource",
    "describe_validation_error",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time in UTC, truncated to milliseconds like the stored timestamps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _as_utc(value: datetime) -> datetime:
    # A naive timestamp from an older file is taken as UTC rather than the server's local time.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso_z(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, AfterValidator(_as_utc), PlainSerializer(_iso_z, return_type=str)]
"""A UTC datetime stored as ISO 8601 with milliseconds and `Z` (`2025-10-28T06:07:06.077Z`)."""


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, as stored on disk."""
        return self.model_dump(mode="json", by_alias=True)


class RunStatus(StrEnum):
    """Where a run is in its life; see DESIGN.md's state diagram."""

    queued = "queued"
    uploading = "uploading"
    processing = "processing"
    fetching = "fetching"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE_STATUSES = frozenset({RunStatus.uploading, RunStatus.processing, RunStatus.fetching})
FINAL_STATUSES = frozenset({RunStatus.completed, RunStatus.failed, RunStatus.cancelled})

PREDICTION_MODES: dict[str, str] = {
    "pointmap": "Pointmap Branch",
    "depth": "Depthmap and Camera Branch",
}


class VGGTSettings(_CamelModel):
    """The reconstruction settings a user picks; mapped to the Space's `/gradio_demo` inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conf_threshold: float = Field(
        50.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="Percentile of the model's confidence below which points are dropped.",
    )
    prediction_mode: Literal["pointmap", "depth"] = Field(
        "depth", description="Which VGGT head builds the points: pointmap, or depth + cameras."
    )
    mask_black_bg: bool = False
    mask_white_bg: bool = False
    mask_sky: bool = False
    show_cameras: bool = True

    def space_kwargs(self, frame_filter: str = "All") -> dict[str, Any]:
        """The keyword arguments of the Space's `/gradio_demo` for these settings."""
        return {
            "conf_thres": float(self.conf_threshold),
            "frame_filter": frame_filter,
            "mask_black_bg": self.mask_black_bg,
            "mask_white_bg": self.mask_white_bg,
            "show_cam": self.show_cameras,
            "mask_sky": self.mask_sky,
            "prediction_mode": PREDICTION_MODES[self.prediction_mode],
        }


class RunProgress(_CamelModel):
    """The backend's latest word on a run: queue place, ETA, fraction done, last log line."""

    rank: int | None = None
    queue_size: int | None = None
    eta: float | None = None
    fraction: float | None = Field(None, ge=0, le=1)
    message: str | None = None
    updated_at: Timestamp | None = None


class Artifacts(_CamelModel):
    """Files a run produced, as names relative to the run's folder (None when absent)."""

    model_config = ConfigDict(extra="allow")

    glb: str | None = None
    predictions: str | None = None


class RemoteJob(_CamelModel):
    """Where the run lives on the backend (the Space keeps it only until it restarts)."""

    model_config = ConfigDict(extra="allow")

    target_dir: str | None = None
    frames: list[str] | None = Field(
        None, description="The backend's frame-filter choices for this run ('0: name', …)."
    )
    session_hash: str | None = Field(
        None,
        description="The client session that reconstructed the run: the Space keeps the frame "
        "choices in it (about an hour after the session closes).",
    )


class UploadStats(_CamelModel):
    """What the upload step sent, against what the original files would have been."""

    bytes_sent: int = Field(ge=0)
    bytes_original: int = Field(ge=0)
    files_resized: int = Field(0, ge=0)
    originals_reason: str | None = Field(
        None, description="Why the original files were sent although presize was asked."
    )


class VideoSource(_CamelModel):
    """The video a run's frames were sampled from, kept in the run folder under `video/`."""

    file_name: str
    size: int = Field(ge=0, description="Bytes of the video file.")
    duration_s: float = Field(ge=0, description="Length of the clip in seconds.")
    clip_fps: float = Field(ge=0, description="Frames per second of the clip.")
    sample_fps: float = Field(gt=0, description="Frames kept per second of the clip.")
    frame_count: int = Field(ge=0, description="How many frames were kept as the run's images.")
    rotation: int = Field(
        0,
        ge=0,
        lt=360,
        description="Degrees the frames were turned clockwise to show them as the camera did "
        "(the clip's display matrix: 90 for a phone's portrait clip).",
    )


class Attempt(_CamelModel):
    """One earlier try of a run, kept when it is retried: how far it got and how it ended."""

    number: int = Field(ge=1)
    status: RunStatus
    reached: RunStatus = Field(
        RunStatus.queued, description="The last step the attempt got to before it ended."
    )
    error: str | None = None
    error_kind: str | None = None
    submitted_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None


class RenderStatus(StrEnum):
    """Where a re-render is: waiting, rendering, or ended."""

    queued = "queued"
    rendering = "rendering"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


RenderSource = Literal["reconstruction", "space", "local"]
"""Who built a version's GLB: the run itself, the backend's `/update_visualization`, or this app
re-filtering the run's `predictions.npz`."""


class RunVersion(_CamelModel):
    """One GLB of a completed run: the reconstruction (version 1) or a re-render of it."""

    model_config = ConfigDict(extra="allow")

    number: int = Field(ge=1)
    status: RenderStatus = RenderStatus.completed
    settings: VGGTSettings
    frame: int | None = Field(
        None, ge=0, description="Show only this frame's points (index in model order); null: all."
    )
    glb: str | None = Field(None, description="The GLB's file name, relative to the run folder.")
    points: int | None = Field(None, ge=0, description="Points in the GLB's cloud.")
    cameras: int | None = Field(None, ge=0, description="Camera cones in the GLB.")
    source: RenderSource = "space"
    requested_at: Timestamp = Field(default_factory=utc_now)
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    error: str | None = None
    error_kind: str | None = Field(
        None,
        description="Why it failed, for the faces: 'forgotten' (the backend no longer holds the "
        "run: re-run it), 'unsupported', 'frame_filter', 'backend', 'storage'.",
    )
    cancel_requested_at: Timestamp | None = None
    owner_pid: int | None = Field(
        None, description="The process that renders it; a dead owner means it was interrupted."
    )

    @property
    def is_active(self) -> bool:
        """True while it waits or renders."""
        return self.status in (RenderStatus.queued, RenderStatus.rendering)


class VGGTRun(_CamelModel):
    """One run as stored in `metadata.json`; unknown keys from older files are kept."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    run_id: str
    status: RunStatus = RunStatus.queued
    settings: VGGTSettings = Field(default_factory=VGGTSettings)
    images: list[str] = Field(default_factory=list)
    requested_at: Timestamp = Field(default_factory=utc_now)
    submitted_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    error: str | None = None
    error_kind: str | None = Field(
        None,
        description="Which failure it was: a backend kind ('unreachable', 'quota', 'timeout', …), "
        "'storage', 'interrupted' or 'unexpected'; null for older runs and runs not failed.",
    )
    artifacts: Artifacts = Field(default_factory=Artifacts)
    progress: RunProgress | None = None
    backend: str | None = None
    remote: RemoteJob | None = None
    presize: bool = True
    upload: UploadStats | None = None
    video: VideoSource | None = None
    attempt: int = Field(
        0, ge=0, description="The current attempt: 1 after the first start, +1 at each retry."
    )
    attempts: list[Attempt] = Field(
        default_factory=list, description="Earlier attempts, oldest first (kept by retry)."
    )
    cancel_requested_at: Timestamp | None = Field(
        None, description="Set by a cancel in any process; the worker holding the run stops."
    )
    versions: list[RunVersion] = Field(
        default_factory=list,
        description="The run's GLBs, oldest first: 1 is the reconstruction, then re-renders.",
    )
    parent_run_id: str | None = Field(
        None, description="The run this one re-runs with new settings (its images, copied)."
    )

    @property
    def all_versions(self) -> list[RunVersion]:
        """Every version, oldest first; an older completed run's GLB reads as version 1."""
        if self.versions or self.status is not RunStatus.completed:
            return list(self.versions)
        first = RunVersion(
            number=1,
            settings=self.settings,
            glb=self.artifacts.glb or "scene.glb",
            source="reconstruction",
            requested_at=self.submitted_at or self.requested_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )
        return [first]

    def version(self, number: int | None = None) -> RunVersion | None:
        """A version by number; None gives the newest completed one."""
        versions = self.all_versions
        if number is None:
            done = [v for v in versions if v.status is RenderStatus.completed and v.glb]
            return done[-1] if done else None
        return next((v for v in versions if v.number == number), None)

    @property
    def render(self) -> RunVersion | None:
        """The re-render waiting or in progress, if any."""
        return next((v for v in reversed(self.versions) if v.is_active), None)

    @property
    def reached(self) -> RunStatus:
        """The last step this attempt got to (for a failed or cancelled run, where it stopped)."""
        if self.status not in (RunStatus.failed, RunStatus.cancelled):
            return self.status
        if self.artifacts.glb is not None or (
            self.progress is not None and self.progress.fraction == 1.0 and self.remote is not None
        ):
            return RunStatus.fetching
        if self.remote is not None and self.remote.target_dir:
            return RunStatus.processing
        if self.started_at is not None:
            return RunStatus.uploading
        return RunStatus.queued

    @property
    def is_active(self) -> bool:
        """True while a worker owns the run or it waits for one."""
        return self.status in ACTIVE_STATUSES or (
            self.status is RunStatus.queued and self.submitted_at is not None
        )

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


_FIELD_NAMES = {
    "confThreshold": "Confidence threshold",
    "predictionMode": "Prediction mode",
}


def describe_validation_error(error: ValidationError) -> str:
    """A pydantic error as sentences a person can read, one per problem."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "value"
        name = str(item["loc"][-1]) if item["loc"] else where
        # A setting is named alike given in camelCase or snake_case, alone or inside a run.
        key = to_camel(name)
        label = _FIELD_NAMES.get(key, where)
        if item["type"] == "extra_forbidden":
            shown = "".join(ch if ch.isprintable() else "?" for ch in name)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            parts.append(f"Unknown setting '{shown}'.")
        elif item["type"] == "literal_error" and key == "predictionMode":
            parts.append(f"{label} must be 'pointmap' or 'depth', not {item['input']!r}.")
        elif item["type"] in {"greater_than_equal", "less_than_equal"} and key == "confThreshold":
            parts.append(f"{label} must be between 0 and 100, not {item['input']!r}.")
        else:
            parts.append(f"{label}: {item['msg']}.")
    return " ".join(parts)
