"""What every REST handler shares: the call it gets, its endpoint's spec, and its answers.

A handler reads a `Call`, runs the blocking service in a worker thread (`_call`) and answers
with `_json` or, for a file, `_file_response` (Range, ETag, 304).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..models import describe_validation_error
from ..service import StudioService
from ._errors import ApiError

__all__ = ["OPENAPI_KEY", "SERVICE_KEY", "Call", "Endpoint", "Handler"]

SERVICE_KEY = "vggt.service"
# The OpenAPI document's maker rides in the scope too: it reads the endpoint table, which names
# the handlers, so a handler importing it would close an import cycle.
OPENAPI_KEY = "vggt.openapi"

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


def _strict(model: type[M], data: dict[str, Any]) -> M:
    """The documented JSON only: camelCase names, true/false for booleans, numbers."""
    try:
        return model.model_validate(data, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ApiError(400, "Invalid settings", describe_validation_error(exc)) from None


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
