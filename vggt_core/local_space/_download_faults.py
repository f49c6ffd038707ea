"""ASGI middleware: GLB downloads fail as the download_* options ask; job cancels are recorded."""

import asyncio
from typing import Any

from ._handlers import StandIn
from ._options import StandInOptions

NOT_A_GLB = b"<!doctype html><html><body><h1>Your space is in error</h1></body></html>\n"


def _is_glb_download(path: str) -> bool:
    return path.startswith("/gradio_api/file=") and path.endswith(".glb")


class DownloadFaults:
    """ASGI middleware: GLB downloads answer as the download_* options say (status, garbage,
    truncation, a byte rate); every other request passes through untouched."""

    def __init__(self, app: Any, stand_in: StandIn) -> None:
        self.app = app
        self.stand_in = stand_in

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one request."""
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path", "").endswith("/cancel")
        ):
            # Recorded so tests can tell that a client stopped its remote job.
            self.stand_in._record("/cancel", {}, None)
        if scope["type"] != "http" or not _is_glb_download(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        options, _ = self.stand_in.current_options()
        if options.download_status is not None:
            await _send_whole(send, options.download_status, b"Not Found\n", b"text/plain")
        elif options.download_garbage:
            await _send_whole(send, 200, NOT_A_GLB, b"text/html")
        elif options.download_truncate is None and options.download_rate is None:
            await self.app(scope, receive, send)
        else:
            await self._altered(scope, receive, send, options)

    async def _altered(
        self, scope: dict[str, Any], receive: Any, send: Any, options: StandInOptions
    ) -> None:
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        data = bytes(body)
        if start.get("status") == 200 and options.download_truncate is not None:
            data = data[: int(len(data) * options.download_truncate)]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
        rate = options.download_rate
        step = max(1, int(rate / 10)) if rate else max(len(data), 1)  # ten pieces a second
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            for offset in range(0, len(data), step):
                if gone.is_set():
                    return  # the client hung up: stop trickling
                piece = data[offset : offset + step]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                if rate:
                    await asyncio.sleep(len(piece) / rate)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Any, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _send_whole(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
