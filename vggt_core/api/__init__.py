"""The REST API: the earlier system's endpoints (and more) under `/api`, on one StudioService.

Served beside the pages by `streamlit run app.py` (app.py hands `api_routes` and
`api_middleware` to `st.App`, with the pages' own service), or alone by
`python -m vggt_core serve` (`create_api_app`). No Streamlit here.

    POST   /api/runs                          create a run: 201 {runId, status}
    POST   /api/runs/{runId}/images           add images: {runId, imagesUploaded, images}
    POST   /api/runs/{runId}/process          start it: 202 {runId, status}
    GET    /api/runs/{runId}                  its metadata, artifacts as URLs
    GET    /api/runs/{runId}/artifacts/{type} glb | predictions (Range, ETag)
    GET    /api/runs                          ?status=&q=&limit=&offset=
    DELETE /api/runs/{runId}                  ?force=true for an active run
    POST   /api/runs/{runId}/cancel | /retry
    POST   /api/runs/{runId}/rerender         new settings, a new version: 202 the version
    POST   /api/runs/{runId}/rerender/cancel  cancel the waiting or running re-render
    GET    /api/runs/{runId}/versions         every version, with its GLB's URL
    GET    /api/runs/{runId}/versions/{n}/glb a version's GLB (Range, ETag)
    POST   /api/runs/{runId}/rerun            the same images, new settings: 202 {runId, status}
    GET    /api/health                        ?check=true asks the backend too
    GET    /api/openapi.json
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..service import StudioService
from ._auth import check_access
from ._errors import error_response, response_for
from ._openapi import openapi_document
from ._plumbing import OPENAPI_KEY, SERVICE_KEY
from ._routes import build_router, http_error

__all__ = [
    "API_PREFIX",
    "ServiceGetter",
    "api_middleware",
    "api_routes",
    "create_api_app",
    "openapi_document",
]

API_PREFIX = "/api"
ServiceGetter = Callable[[], StudioService]


class _Api:
    """The API's ASGI app: finds the service, lets in whom `_auth` allows, routes the rest."""

    def __init__(self, service_getter: ServiceGetter) -> None:
        self._service_getter = service_getter
        self._router = build_router()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            service = await run_in_threadpool(self._service_getter)
        except Exception as exc:
            await response_for(exc)(scope, receive, send)
            return
        refusal = check_access(scope, service.config.api_token_value)
        if refusal is not None:
            headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
            response = error_response(refusal.status, refusal.error, refusal.details, headers)
            await response(scope, receive, send)
            return
        scope[SERVICE_KEY] = service
        scope[OPENAPI_KEY] = openapi_document
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._router(scope, receive, tracked)
        except Exception as exc:  # past the handlers (e.g. a file gone while it was sent)
            if started:
                raise  # too late for an answer: the server logs it and drops the connection
            await response_for(exc)(scope, receive, send)


class _NoCompressionOfFiles:
    """Keeps a compressing middleware (Streamlit's gzip) off the API's file downloads, which
    must keep their Content-Length, ETag and byte ranges."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        is_file = (
            "/artifacts/" in path
            or "/exports/" in path
            or path.endswith("/archive")
            or ("/versions/" in path and path.endswith("/glb"))
        )
        if path.startswith(f"{API_PREFIX}/") and is_file:
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"accept-encoding"]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def api_routes(service_getter: ServiceGetter) -> list[BaseRoute]:
    """The API mounted at /api, calling `service_getter()` for the service of each request."""
    return [Mount(API_PREFIX, app=_Api(service_getter))]


def api_middleware() -> list[Middleware]:
    """Middleware an app serving the API beside other routes should put outermost."""
    return [Middleware(_NoCompressionOfFiles)]


def create_api_app(
    service: StudioService | ServiceGetter,
    *,
    close_on_shutdown: bool = True,
) -> Starlette:
    """The API alone (`python -m vggt_core serve`, tests); its shutdown closes the service:
    running runs end interrupted at once, waiting runs stay queued on disk."""
    if isinstance(service, StudioService):
        fixed = service
        getter: ServiceGetter = lambda: fixed  # noqa: E731
    else:
        getter = service

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_on_shutdown and isinstance(service, StudioService):
                await run_in_threadpool(service.close)

    # A path the mount does not match (a line break in it) still gets the API's error shape.
    return Starlette(
        routes=api_routes(getter),
        middleware=api_middleware(),
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
