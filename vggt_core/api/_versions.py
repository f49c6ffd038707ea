"""The REST API's version handlers: re-render (and cancel it), list versions, download a
version's GLB or export, the run's archive, and re-run with new settings.

Each is a thin face over StudioService (see `_plumbing`); `version_view` is a version as the
API shows it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from starlette.responses import JSONResponse, Response

from ..exports import EXPORT_SUFFIXES
from ..models import RenderStatus, RunVersion, VGGTRun, VGGTSettings
from ..service import StudioService
from ._bodies import read_json
from ._errors import ApiError
from ._plumbing import Call, _call, _file_response, _json, _regular_file, _strict
from ._runs import MEDIA_TYPES, run_view
from ._schemas import RerenderRequest, RerunRequest, RunRef

__all__ = [
    "EXPORT_MEDIA",
    "VERSION_NUMBER",
    "cancel_rerender",
    "get_run_archive",
    "get_version_export",
    "get_version_glb",
    "list_versions",
    "rerender",
    "rerun",
    "version_view",
]

# A version number in a URL: a positive whole number, never anything a path could be made of.
VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,8}")
EXPORT_MEDIA = {".zip": "application/zip", ".json": "application/json", ".ply": "application/ply"}


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


def _settings_from(run: VGGTRun, given: VGGTSettings) -> VGGTSettings:
    """The run's newest version's settings with the ones the request gave."""
    newest = run.version()
    base = newest.settings if newest is not None else run.settings
    return base.model_copy(update={name: getattr(given, name) for name in given.model_fields_set})


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
