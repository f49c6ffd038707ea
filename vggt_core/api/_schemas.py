"""The REST API's data: every request and response body, camelCase, as pydantic models.

These models are the single description of the API's data: the routes build their answers with
them and the OpenAPI document (`/api/openapi.json`) is generated from their JSON schemas.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..models import RunStatus, RunVersion, VGGTRun, VGGTSettings
from ..video import MAX_SAMPLE_FPS, MIN_SAMPLE_FPS

__all__ = [
    "ArtifactLinks",
    "BackendCheck",
    "BrokenRunView",
    "CreateRunRequest",
    "DeleteQuery",
    "DeleteResponse",
    "ErrorResponse",
    "FileProblem",
    "HealthQuery",
    "HealthResponse",
    "Limits",
    "ListQuery",
    "RerenderRequest",
    "RerunRequest",
    "RunList",
    "RunRef",
    "RunView",
    "UploadResponse",
    "VersionList",
    "VersionView",
    "VideoRunForm",
]

MAX_PAGE = 200


class ApiModel(BaseModel):
    """camelCase on the wire (snake_case accepted in Python); unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys."""
        return self.model_dump(mode="json", by_alias=True)


# --- requests ----------------------------------------------------------------------------------


class CreateRunRequest(ApiModel):
    """`POST /api/runs`: the settings (omitted ones take their defaults)."""

    settings: VGGTSettings = Field(default_factory=VGGTSettings)
    presize: bool | None = Field(
        None,
        description="Send model-sized images (the same pixels VGGT sees, fewer bytes); "
        "default: the server's VGGT_PRESIZE.",
    )


def _whole_float_as_int(value: Any) -> Any:
    # JSON has one number type: 2.0 is the whole number 2, as JSON Schema's "integer" says.
    return int(value) if isinstance(value, float) and value.is_integer() else value


class RerenderRequest(ApiModel):
    """`POST /api/runs/{runId}/rerender`: new settings for a new version (no GPU)."""

    settings: VGGTSettings = Field(
        default_factory=VGGTSettings,
        description="The settings to change; those omitted keep the newest version's.",
    )
    frame: Annotated[int | None, BeforeValidator(_whole_float_as_int)] = Field(
        None,
        ge=0,
        le=100_000,
        description="Show only this frame's points (0 is the first, in model order); "
        "null: all frames.",
    )


class RerunRequest(ApiModel):
    """`POST /api/runs/{runId}/rerun`: a new run of the same images with new settings."""

    settings: VGGTSettings = Field(
        default_factory=VGGTSettings,
        description="The settings to change; those omitted keep the newest version's.",
    )


class VideoRunForm(ApiModel):
    """`POST /api/videos`: the form fields beside the video file (all optional)."""

    settings: VGGTSettings = Field(
        default_factory=VGGTSettings, description="The settings, as a JSON object in one field."
    )
    fps: float = Field(
        1.0,
        ge=MIN_SAMPLE_FPS,
        le=MAX_SAMPLE_FPS,
        allow_inf_nan=False,
        description="Frames kept per second of the clip.",
    )
    presize: bool | None = Field(
        None, description="Send model-sized frames; default: the server's VGGT_PRESIZE."
    )


class ListQuery(ApiModel):
    """`GET /api/runs` query: a page of runs, newest first."""

    status: RunStatus | None = Field(None, description="Only runs in this status.")
    q: str | None = Field(
        None, max_length=200, description="Text in the run id or an image name (any case)."
    )
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="Runs per page.")
    offset: int = Field(0, ge=0, le=10_000_000, description="Runs to skip (newest first).")


class DeleteQuery(ApiModel):
    """`DELETE /api/runs/{runId}` query."""

    force: bool = Field(False, description="Cancel and delete a run that is still active.")


class HealthQuery(ApiModel):
    """`GET /api/health` query."""

    check: bool = Field(
        False, description="Also ask the backend whether it serves the VGGT API (slower)."
    )


# --- responses ---------------------------------------------------------------------------------


class RunRef(ApiModel):
    """A run and its status, as answered by create, process and retry."""

    run_id: str
    status: RunStatus


class UploadResponse(ApiModel):
    """`POST /api/runs/{runId}/images`: what this upload stored."""

    run_id: str
    images_uploaded: int = Field(ge=0, description="How many files this upload stored.")
    images: list[str] = Field(description="Every image the run holds now, sorted.")


class ArtifactLinks(ApiModel):
    """A run's downloadable files as URLs, present only for files that exist."""

    glb: str | None = Field(None, description="`/api/runs/<id>/artifacts/glb`")
    predictions: str | None = Field(None, description="`/api/runs/<id>/artifacts/predictions`")


class RunView(VGGTRun):
    """A run's metadata (`metadata.json`) with `artifacts` as download URLs."""

    artifacts: ArtifactLinks = Field(default_factory=ArtifactLinks)  # type: ignore[assignment]


class VersionView(RunVersion):
    """One version of a run (`RunVersion`) with `glb` as its download URL once rendered."""

    glb: str | None = Field(
        None, description="`/api/runs/<id>/versions/<n>/glb` once rendered; null before."
    )


class VersionList(ApiModel):
    """`GET /api/runs/{runId}/versions`: every version, oldest first (1 is the reconstruction)."""

    run_id: str
    versions: list[VersionView]


class BrokenRunView(ApiModel):
    """A run folder whose metadata cannot be read, with the reason."""

    run_id: str
    reason: str


class RunList(ApiModel):
    """`GET /api/runs`: one page of runs, newest first, and how many match in all."""

    runs: list[RunView]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)
    broken: list[BrokenRunView] = Field(default_factory=list)


class DeleteResponse(ApiModel):
    """`DELETE /api/runs/{runId}`: the run and its files are gone."""

    run_id: str
    deleted: Literal[True] = True


class Limits(ApiModel):
    """What one request may carry."""

    max_images_per_run: int
    max_image_bytes: int
    max_image_pixels: int
    max_json_bytes: int


class BackendCheck(ApiModel):
    """Whether the backend answers and serves the VGGT API, in plain words."""

    ok: bool
    summary: str
    details: list[str] = Field(default_factory=list)


class HealthResponse(ApiModel):
    """`GET /api/health`: the studio answers; its backend, runs and limits."""

    ok: bool
    backend: str = Field(description="The backend without credentials or query.")
    hf_token: bool = Field(description="Whether an HF token is configured (never its value).")
    auth: Literal["token", "loopback"] = Field(
        description="`token`: every call needs the bearer token; `loopback`: no token is set "
        "and only this machine is answered."
    )
    runs: int = Field(ge=0)
    counts: dict[str, int] = Field(description="Runs per status (`broken`: unreadable).")
    limits: Limits
    check: BackendCheck | None = None


class FileProblem(ApiModel):
    """One refused file and why."""

    file: str
    reason: str


class ErrorResponse(ApiModel):
    """Every error: a short title and, when there is more to say, the details."""

    error: str
    details: Annotated[
        str | list[FileProblem] | None,
        Field(description="Plain words, or one entry per refused file."),
    ] = None
