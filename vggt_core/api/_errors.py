"""Every refusal as `{"error": …, "details": …}` with its status; never a traceback."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.responses import JSONResponse

from ..errors import (
    ConfigError,
    ExportError,
    ImagesRejected,
    InvalidRunId,
    LockTimeout,
    RunBusy,
    RunNotFound,
    SpaceError,
    StorageError,
    VGGTError,
    VideoRejected,
)
from ..models import describe_validation_error
from ._schemas import ErrorResponse, FileProblem

__all__ = ["ApiError", "error_response", "response_for"]

log = logging.getLogger("vggt_core.api")


class ApiError(Exception):
    """A refusal the routes raise on purpose: status, title, details."""

    def __init__(
        self,
        status: int,
        error: str,
        details: str | list[FileProblem] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    error: str,
    details: str | list[FileProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The error shape every refusal takes."""
    body = ErrorResponse(error=error, details=details).wire()
    return JSONResponse(body, status_code=status, headers=headers)


def response_for(exc: BaseException, *, doing: str = "") -> JSONResponse:
    """The answer to an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.error, exc.details, exc.headers)
    if isinstance(exc, ValidationError):
        return error_response(400, "Invalid request", describe_validation_error(exc))
    if isinstance(exc, InvalidRunId):
        return error_response(400, "Invalid run id", str(exc))
    if isinstance(exc, RunNotFound):
        return error_response(404, "Run not found", str(exc))
    if isinstance(exc, VideoRejected):
        problems = [FileProblem(file=p.name, reason=p.reason) for p in exc.problems]
        return error_response(400, "Video rejected", problems)
    if isinstance(exc, ImagesRejected):
        problems = [FileProblem(file=p.name, reason=p.reason) for p in exc.problems]
        return error_response(400, "Images rejected", problems)
    if isinstance(exc, RunBusy):
        return error_response(409, doing or "Conflict", str(exc))
    if isinstance(exc, ExportError):
        return error_response(422, "Export not possible", str(exc))
    if isinstance(exc, LockTimeout):
        return error_response(503, "Busy", str(exc), {"Retry-After": "5"})
    if isinstance(exc, StorageError):
        log.warning("storage refused a request: %s", exc)
        return error_response(500, "Storage error", str(exc))
    if isinstance(exc, ConfigError):
        return error_response(503, "Not configured", str(exc))
    if isinstance(exc, SpaceError):
        return error_response(502, "Backend error", str(exc))
    if isinstance(exc, VGGTError):
        return error_response(500, "Error", str(exc))
    log.error("unexpected error serving the API", exc_info=exc)
    return error_response(500, "Internal server error", "The server failed; see its log.")
