"""The REST API's run handlers: create, add images, start, read, list, download, delete,
cancel, retry; and the studio's own (health, the OpenAPI document).

Each is a thin face over StudioService (see `_plumbing`); `run_view` is a run as the API shows it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from ..errors import RunBusy
from ..models import RunStatus, VGGTRun, describe_validation_error
from ..service import StudioService
from ..storage import ARTIFACT_FILES
from ._bodies import MAX_JSON_BYTES, read_images, read_json, read_video
from ._errors import ApiError
from ._plumbing import OPENAPI_KEY, Call, _call, _file_response, _json, _regular_file
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
    RunRef,
    UploadResponse,
    VideoRunForm,
)

__all__ = [
    "MEDIA_TYPES",
    "cancel_run",
    "create_run",
    "delete_run",
    "get_artifact",
    "get_run",
    "health",
    "list_runs",
    "openapi",
    "process_run",
    "retry_run",
    "run_view",
    "submit_video",
    "upload_images",
]

MEDIA_TYPES = {"glb": "model/gltf-binary", "predictions": "application/octet-stream"}
SUFFIXES = {"glb": ".glb", "predictions": ".npz"}


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
    document: Callable[[str], dict[str, Any]] = call.request.scope[OPENAPI_KEY]
    return JSONResponse(document(call.prefix or "/api"))
