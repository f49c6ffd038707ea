"""The REST API's endpoints: one table drives the routing and the OpenAPI document.

Every handler is a thin face over StudioService: it reads the request within bounds, calls the
service in a worker thread (the service blocks on disk and locks) and answers with the models
of `_schemas`. Every exception becomes the error shape (`_errors.response_for`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidRunId, RunBusy
from ..exports import EXPORT_SUFFIXES
from ..models import (
    RenderStatus,
    RunStatus,
    RunVersion,
    VGGTRun,
    VGGTSettings,
    describe_validation_error,
)
from ..service import StudioService
from ..storage import ARTIFACT_FILES, is_valid_run_id
from ._bodies import MAX_JSON_BYTES, read_images, read_json, read_video
from ._errors import ApiError, error_response, response_for
from ._schemas import (
    ArtifactLinks,
    BackendCheck,
    BrokenRunView,
    CreateRunRequest,
    DeleteQuery,
    DeleteResponse,
    HealthQuery,
    HealthResponse,
    Limits,
    ListQuery,
    RerenderRequest,
    RerunRequest,
    RunList,
    RunRef,
    RunView,
    UploadResponse,
    VersionList,
    VersionView,
    VideoRunForm,
)

__all__ = [
    "ENDPOINTS",
    "SERVICE_KEY",
    "Call",
    "Endpoint",
    "build_router",
    "http_error",
    "run_view",
    "version_view",
]

SERVICE_KEY = "vggt.service"
MEDIA_TYPES = {"glb": "model/gltf-binary", "predictions": "application/octet-stream"}
SUFFIXES = {"glb": ".glb", "predictions": ".npz"}
# A version number in a URL: a positive whole number, never anything a path could be made of.
VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,8}")

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


async def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: the service, the run id, the parsed query."""

    request: Request
    service: StudioService
    run_id: str
    query: Any

    @property
    def prefix(self) -> str:
        """Where the API is mounted (`/api`), for the URLs it hands out."""
        return str(self.request.scope.get("root_path", ""))


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One operation: its route, handler and what it reads and answers (for the OpenAPI doc)."""

    method: str
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, type[BaseModel] | Literal["file"] | None]
    errors: tuple[int, ...] = ()
    failure: str = ""
    body: type[BaseModel] | Literal["multipart", "video"] | None = None
    query: type[BaseModel] | None = None
    description: str = ""
    tags: tuple[str, ...] = field(default=("runs",))


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", by_alias=True), status_code=status)


def _artifact_url(prefix: str, run_id: str, kind: str) -> str:
    return f"{prefix}/runs/{run_id}/artifacts/{kind}"


def run_view(service: StudioService, run: VGGTRun, prefix: str) -> dict[str, Any]:
    """The run's metadata with `artifacts` as URLs, only for files that exist (blocking)."""
    data = run.to_json_dict()
    links = ArtifactLinks()
    for kind in ARTIFACT_FILES:
        if service.artifact(run.run_id, kind) is not None:  # type: ignore[arg-type]
            setattr(links, kind, _artifact_url(prefix, run.run_id, kind))
    data["artifacts"] = links.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _version_url(prefix: str, run_id: str, number: int) -> str:
    return f"{prefix}/runs/{run_id}/versions/{number}/glb"


def version_view(
    service: StudioService, run_id: str, version: RunVersion, prefix: str
) -> dict[str, Any]:
    """A version's metadata with `glb` as its download URL once its file exists (blocking)."""
    data = version.to_json_dict()
    rendered = version.status is RenderStatus.completed and (
        service.store.version_file(run_id, version.glb) is not None
    )
    data["glb"] = _version_url(prefix, run_id, version.number) if rendered else None
    return data


def _strict(model: type[M], data: dict[str, Any]) -> M:
    """The documented JSON only: camelCase names, true/false for booleans, numbers."""
    try:
        return model.model_validate(data, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ApiError(400, "Invalid settings", describe_validation_error(exc)) from None


def _settings_from(run: VGGTRun, given: VGGTSettings) -> VGGTSettings:
    """The run's newest version's settings with the ones the request gave."""
    newest = run.version()
    base = newest.settings if newest is not None else run.settings
    return base.model_copy(update={name: getattr(given, name) for name in given.model_fields_set})


def _file_response(call: Call, path: str, found: os.stat_result, media: str, name: str) -> Response:
    """A file with Range and ETag support; 304 when the client's If-None-Match matches."""
    response = FileResponse(path, media_type=media, filename=name, stat_result=found)
    etag = response.headers["etag"]
    wanted = call.request.headers.get("if-none-match", "")
    if etag in {tag.strip() for tag in wanted.split(",")} or wanted.strip() == "*":
        return Response(status_code=304, headers={"etag": etag})
    return response


def _regular_file(path: os.PathLike[str] | None) -> tuple[str, os.stat_result] | None:
    if path is None:
        return None
    try:
        found = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (os.fspath(path), found) if stat.S_ISREG(found.st_mode) else None


# --- handlers ------------------------------------------------------------------------------


async def create_run(call: Call) -> Response:
    data = await read_json(call.request)
    try:
        # Strictly the documented JSON: camelCase names, true/false for booleans, numbers.
        body = CreateRunRequest.model_validate(data, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ApiError(400, "Invalid settings", describe_validation_error(exc)) from None
    presize = call.service.config.presize if body.presize is None else body.presize
    run = await _call(call.service.create_run, body.settings, presize=presize)
    return _json(RunRef(run_id=run.run_id, status=run.status), 201)


def _video_form(fields: Mapping[str, str]) -> VideoRunForm:
    # Form fields are text: only the documented spellings are read (as the JSON routes are
    # strict), and a field left blank takes its default.
    data: dict[str, Any] = {}
    text = {k: v.strip() for k, v in fields.items() if v.strip()}
    try:
        if "settings" in text:
            data["settings"] = json.loads(text["settings"])
        if "fps" in text:
            data["fps"] = float(text["fps"])
    except ValueError:
        raise ApiError(400, "Invalid settings", "settings must be JSON and fps a number.") from None
    if "presize" in text:
        if text["presize"] not in ("true", "false"):
            raise ApiError(400, "Invalid settings", "presize must be true or false.")
        data["presize"] = text["presize"] == "true"
    try:
        return VideoRunForm.model_validate(data, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ApiError(400, "Invalid settings", describe_validation_error(exc)) from None


async def submit_video(call: Call) -> Response:
    service = call.service
    name, data, fields = await read_video(call.request, max_bytes=service.video_limits.max_bytes)
    form = _video_form(fields)
    presize = service.config.presize if form.presize is None else form.presize
    run = await _call(
        service.submit_video, form.settings, name, data, fps=form.fps, presize=presize
    )
    return _json(RunRef(run_id=run.run_id, status=RunStatus.processing), 202)


async def upload_images(call: Call) -> Response:
    service = call.service
    await _call(service.get, call.run_id)  # 404 before reading a body for nothing
    files = await read_images(
        call.request,
        max_files=service.max_images_per_run,
        max_file_bytes=service.store.max_image_bytes,
    )
    names = await _call(service.add_images, call.run_id, files)
    run = await _call(service.get, call.run_id)
    return _json(
        UploadResponse(run_id=run.run_id, images_uploaded=len(names), images=sorted(run.images))
    )


async def process_run(call: Call) -> Response:
    try:
        run = await _call(call.service.start, call.run_id)
    except RunBusy:
        current = await _call(call.service.get, call.run_id)
        if current.submitted_at is None and current.status is RunStatus.queued:
            raise ApiError(400, "Failed to start processing", "Run has no images") from None
        state = "processing" if current.is_active else current.status.value
        raise ApiError(409, "Failed to start processing", f"Run is already {state}") from None
    # The earlier system's answer: processing was requested (the run reads `queued` until a
    # worker takes it).
    return _json(RunRef(run_id=run.run_id, status=RunStatus.processing), 202)


async def get_run(call: Call) -> Response:
    def view() -> dict[str, Any]:
        return run_view(call.service, call.service.get(call.run_id), call.prefix)

    return JSONResponse(await _call(view))


async def list_runs(call: Call) -> Response:
    query: ListQuery = call.query

    def page() -> dict[str, Any]:
        found = call.service.list_runs(
            query.status, query.q, limit=query.limit, offset=query.offset
        )
        return {
            "runs": [run_view(call.service, run, call.prefix) for run in found.runs],
            "total": found.total,
            "limit": query.limit,
            "offset": query.offset,
            "broken": [
                BrokenRunView(run_id=b.run_id, reason=b.reason).wire() for b in found.broken
            ],
        }

    return JSONResponse(await _call(page))


async def get_artifact(call: Call) -> Response:
    kind = call.request.path_params["type"]
    if kind not in ARTIFACT_FILES:
        raise ApiError(
            404, "Unknown artifact type", f"Expected one of: {', '.join(ARTIFACT_FILES)}."
        )
    service = call.service

    def locate() -> tuple[str, os.stat_result] | None:
        service.get(call.run_id)
        return _regular_file(service.artifact(call.run_id, kind))

    located = await _call(locate)
    if located is None:
        raise ApiError(404, "Artifact not found", f"Run {call.run_id} has no {kind} file (yet).")
    path, found = located
    return _file_response(call, path, found, MEDIA_TYPES[kind], f"{call.run_id}{SUFFIXES[kind]}")


async def delete_run(call: Call) -> Response:
    query: DeleteQuery = call.query
    try:
        await _call(call.service.delete, call.run_id, force=query.force)
    except RunBusy as exc:
        raise ApiError(
            409, "Failed to delete run", f"{exc} (or send ?force=true to cancel and delete)"
        ) from None
    return _json(DeleteResponse(run_id=call.run_id))


async def cancel_run(call: Call) -> Response:
    def cancel() -> dict[str, Any]:
        return run_view(call.service, call.service.cancel(call.run_id), call.prefix)

    return JSONResponse(await _call(cancel))


async def retry_run(call: Call) -> Response:
    run = await _call(call.service.retry, call.run_id)
    return _json(RunRef(run_id=run.run_id, status=run.status), 202)


async def rerender(call: Call) -> Response:
    body = _strict(RerenderRequest, await read_json(call.request))
    service = call.service

    def start() -> dict[str, Any]:
        run = service.get(call.run_id)
        if body.frame is not None and body.frame >= len(run.images):
            raise ApiError(
                400,
                "Invalid frame",
                f"Frame {body.frame} is out of range: run {call.run_id} has "
                f"{len(run.images)} frame(s) (0 is the first).",
            )
        settings = _settings_from(run, body.settings)
        version = service.rerender(call.run_id, settings, frame=body.frame)
        return version_view(service, call.run_id, version, call.prefix)

    return JSONResponse(await _call(start), status_code=202)


async def cancel_rerender(call: Call) -> Response:
    def cancel() -> dict[str, Any]:
        return run_view(call.service, call.service.cancel_render(call.run_id), call.prefix)

    return JSONResponse(await _call(cancel))


async def list_versions(call: Call) -> Response:
    def versions() -> dict[str, Any]:
        run = call.service.get(call.run_id)
        views = [version_view(call.service, run.run_id, v, call.prefix) for v in run.all_versions]
        return {"runId": run.run_id, "versions": views}

    return JSONResponse(await _call(versions))


async def get_version_glb(call: Call) -> Response:
    raw = str(call.request.path_params["number"])
    if not VERSION_NUMBER.fullmatch(raw):
        raise ApiError(
            400, "Invalid version number", "A version number is a whole number from 1 up."
        )
    number = int(raw)
    service = call.service

    def locate() -> tuple[str, os.stat_result] | None:
        version = service.get(call.run_id).version(number)
        if version is None or version.status is not RenderStatus.completed:
            return None
        return _regular_file(service.store.version_file(call.run_id, version.glb))

    located = await _call(locate)
    if located is None:
        raise ApiError(
            404, "Version not found", f"Run {call.run_id} has no rendered version {number}."
        )
    path, found = located
    name = f"{call.run_id}.glb" if number == 1 else f"{call.run_id}_v{number}.glb"
    return _file_response(call, path, found, MEDIA_TYPES["glb"], name)


EXPORT_MEDIA = {".zip": "application/zip", ".json": "application/json", ".ply": "application/ply"}


async def get_version_export(call: Call) -> Response:
    raw = str(call.request.path_params["number"])
    fmt = str(call.request.path_params["format"])
    if not VERSION_NUMBER.fullmatch(raw):
        raise ApiError(
            400, "Invalid version number", "A version number is a whole number from 1 up."
        )
    if fmt not in EXPORT_SUFFIXES:
        raise ApiError(
            404, "Unknown export format", f"Expected one of: {', '.join(EXPORT_SUFFIXES)}."
        )
    number = int(raw)

    def make() -> tuple[str, os.stat_result] | None:
        return _regular_file(call.service.export(call.run_id, fmt, version=number))  # type: ignore[arg-type]

    located = await _call(make)
    if located is None:
        raise ApiError(404, "Export not found", f"Run {call.run_id} has no such export.")
    path, found = located
    suffix = os.path.splitext(path)[1]
    name = f"{call.run_id}_v{number}{EXPORT_SUFFIXES[fmt]}"
    return _file_response(call, path, found, EXPORT_MEDIA[suffix], name)


async def get_run_archive(call: Call) -> Response:
    located = await _call(lambda: _regular_file(call.service.export_run(call.run_id)))
    if located is None:
        raise ApiError(404, "Export not found", f"Run {call.run_id} could not be archived.")
    path, found = located
    return _file_response(call, path, found, EXPORT_MEDIA[".zip"], f"{call.run_id}.zip")


async def rerun(call: Call) -> Response:
    body = _strict(RerunRequest, await read_json(call.request))
    service = call.service

    def start() -> VGGTRun:
        settings = _settings_from(service.get(call.run_id), body.settings)
        return service.rerun(call.run_id, settings)

    run = await _call(start)
    return _json(RunRef(run_id=run.run_id, status=run.status), 202)


async def health(call: Call) -> Response:
    query: HealthQuery = call.query
    service = call.service
    config = service.config

    def answer() -> HealthResponse:
        checked = None
        if query.check:
            report = service.check()
            checked = BackendCheck(ok=report.ok, summary=report.summary, details=report.details)
        return HealthResponse(
            ok=True,
            backend=service.space.label,
            hf_token=service.space.has_token,
            auth="token" if config.api_token_value else "loopback",
            runs=service.run_count(),
            counts=service.counts(),
            limits=Limits(
                max_images_per_run=service.max_images_per_run,
                max_image_bytes=service.store.max_image_bytes,
                max_image_pixels=service.store.max_image_pixels,
                max_json_bytes=MAX_JSON_BYTES,
            ),
            check=checked,
        )

    return _json(await _call(answer))


async def openapi(call: Call) -> Response:
    from ._openapi import openapi_document

    return JSONResponse(openapi_document(call.prefix or "/api"))


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
    """The routes under the API's prefix (the caller puts the service in the scope).

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
