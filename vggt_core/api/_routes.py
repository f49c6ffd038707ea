"""The REST API's endpoints: one table drives the routing and the OpenAPI document.

The handlers live by concern (`_runs`, `_versions`) on the shared `_plumbing`; here each
request is checked (run id, query) before its handler, and every exception becomes the error
shape (`_errors.response_for`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidRunId
from ..models import describe_validation_error
from ..service import StudioService
from ..storage import is_valid_run_id
from ._errors import ApiError, error_response, response_for
from ._plumbing import SERVICE_KEY, Call, Endpoint
from ._runs import (
    cancel_run,
    create_run,
    delete_run,
    get_artifact,
    get_run,
    health,
    list_runs,
    openapi,
    process_run,
    retry_run,
    submit_video,
    upload_images,
)
from ._schemas import (
    CreateRunRequest,
    DeleteQuery,
    DeleteResponse,
    HealthQuery,
    HealthResponse,
    ListQuery,
    RerenderRequest,
    RerunRequest,
    RunList,
    RunRef,
    RunView,
    UploadResponse,
    VersionList,
    VersionView,
)
from ._versions import (
    cancel_rerender,
    get_run_archive,
    get_version_export,
    get_version_glb,
    list_versions,
    rerender,
    rerun,
)

__all__ = ["ENDPOINTS", "build_router", "http_error"]

# --- the table -----------------------------------------------------------------------------

_COMMON = (401, 403, 500, 503)
_RUN = (400, 404, *_COMMON)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/runs",
        create_run,
        "Create an empty run with these settings",
        {201: RunRef},
        (400, 413, 415, *_COMMON),
        body=CreateRunRequest,
    ),
    Endpoint(
        "POST",
        "/videos",
        submit_video,
        "Create a run from one video's frames and start it",
        {202: RunRef},
        (400, 413, 415, *_COMMON),
        failure="Failed to submit the video",
        body="video",
    ),
    Endpoint(
        "GET",
        "/runs",
        list_runs,
        "A page of runs, newest first",
        {200: RunList},
        (400, *_COMMON),
        query=ListQuery,
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/images",
        upload_images,
        "Add images to a run not yet started (all or none)",
        {200: UploadResponse},
        (409, 413, 415, *_RUN),
        failure="Failed to upload images",
        body="multipart",
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/process",
        process_run,
        "Start processing the run",
        {202: RunRef},
        (409, *_RUN),
        failure="Failed to start processing",
    ),
    Endpoint("GET", "/runs/{runId}", get_run, "The run's metadata", {200: RunView}, _RUN),
    Endpoint(
        "GET",
        "/runs/{runId}/artifacts/{type}",
        get_artifact,
        "Download a run's file (Range and ETag supported)",
        {200: "file", 206: "file", 304: None},
        (416, *_RUN),
    ),
    Endpoint(
        "DELETE",
        "/runs/{runId}",
        delete_run,
        "Delete a run and its files (an active one only with force)",
        {200: DeleteResponse},
        (409, *_RUN),
        failure="Failed to delete run",
        query=DeleteQuery,
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/cancel",
        cancel_run,
        "Cancel a waiting or running run",
        {200: RunView},
        _RUN,
        failure="Failed to cancel",
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/retry",
        retry_run,
        "Run a failed or cancelled run again",
        {202: RunRef},
        (409, *_RUN),
        failure="Failed to retry",
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/rerender",
        rerender,
        "Re-render a completed run with new settings as a new version (no GPU)",
        {202: VersionView},
        (409, 413, 415, *_RUN),
        failure="Failed to re-render",
        body=RerenderRequest,
        tags=("versions",),
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/rerender/cancel",
        cancel_rerender,
        "Cancel the run's waiting or running re-render",
        {200: RunView},
        _RUN,
        failure="Failed to cancel the re-render",
        tags=("versions",),
    ),
    Endpoint(
        "GET",
        "/runs/{runId}/versions",
        list_versions,
        "The run's versions, oldest first, each with its GLB's URL once rendered",
        {200: VersionList},
        _RUN,
        tags=("versions",),
    ),
    Endpoint(
        "GET",
        "/runs/{runId}/versions/{number}/glb",
        get_version_glb,
        "Download a version's GLB (Range and ETag supported)",
        {200: "file", 206: "file", 304: None},
        (416, *_RUN),
        tags=("versions",),
    ),
    Endpoint(
        "GET",
        "/runs/{runId}/versions/{number}/exports/{format}",
        get_version_export,
        "A version as COLMAP (zip), cameras (JSON), nerfstudio (zip) or PLY, made on first ask",
        {200: "file", 206: "file", 304: None},
        (416, 422, *_RUN),
        failure="Export not possible",
        tags=("versions",),
    ),
    Endpoint(
        "GET",
        "/runs/{runId}/archive",
        get_run_archive,
        "The whole run as a zip: metadata, images, every version's GLB, prepared exports",
        {200: "file", 206: "file", 304: None},
        (416, *_RUN),
    ),
    Endpoint(
        "POST",
        "/runs/{runId}/rerun",
        rerun,
        "Start a new run of this run's images with new settings, linked as its parent",
        {202: RunRef},
        (409, 413, 415, *_RUN),
        failure="Failed to re-run",
        body=RerunRequest,
        tags=("versions",),
    ),
    Endpoint(
        "GET",
        "/health",
        health,
        "The studio answers: backend, runs, limits",
        {200: HealthResponse},
        (400, 502, *_COMMON),
        query=HealthQuery,
        tags=("studio",),
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        openapi,
        "This document",
        {200: None},
        _COMMON,
        tags=("studio",),
    ),
)


def _endpoint(spec: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            service: StudioService = request.scope[SERVICE_KEY]
            run_id = str(request.path_params.get("runId", ""))
            if "runId" in request.path_params and not is_valid_run_id(run_id):
                raise InvalidRunId(
                    f"'{run_id[:80]}' is not a run id (run_<epoch ms>_<6 of a-z0-9>)"
                )
            query = None
            if spec.query is not None:
                try:
                    query = spec.query.model_validate(
                        dict(request.query_params), by_alias=True, by_name=False
                    )
                except ValidationError as exc:
                    raise ApiError(400, "Invalid query", describe_validation_error(exc)) from None
            return await spec.handler(Call(request, service, run_id, query))
        except Exception as exc:
            return response_for(exc, doing=spec.failure)

    endpoint.__name__ = spec.handler.__name__
    return endpoint


async def http_error(request: Request, exc: Exception) -> Response:
    """A routing refusal (404, 405) in the API's error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    titles = {404: "Not found", 405: "Method not allowed"}
    detail = exc.detail if isinstance(exc, HTTPException) else "The server failed; see its log."
    headers = dict(exc.headers) if isinstance(exc, HTTPException) and exc.headers else None
    return error_response(status, titles.get(status, "Error"), str(detail), headers)


def build_router() -> Starlette:
    """The routes under the API's prefix (the caller puts the service and the OpenAPI
    document's maker in the scope, at SERVICE_KEY and OPENAPI_KEY).

    One route per path, whatever its methods, so a 405 names every method the path allows.
    """
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for spec in ENDPOINTS:
        by_path.setdefault(spec.path, {})[spec.method] = _endpoint(spec)

    def route(path: str, handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> Route:
        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)

        return Route(path, dispatch, methods=list(handlers))

    return Starlette(
        routes=[route(path, handlers) for path, handlers in by_path.items()],
        exception_handlers={HTTPException: http_error},
    )
