"""HTTP for tests: a small raw server on 127.0.0.1, and the REST API's in-process client.

The raw server's paths are functions that write the response bytes themselves (so they can
trickle, redirect or stream garbage), and every request's path and headers are recorded. It can
pose as a Gradio app well enough for gradio_client's Client to connect (its config and API
info), with a session cookie set as Gradio does. `client_for` and `assert_error` are what the
REST API's tests share."""

from __future__ import annotations

import json
import shutil
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from vggt_core import StudioService
from vggt_core.api import ServiceGetter, create_api_app

Route = Callable[["Exchange"], None]

GRADIO_CONFIG = {
    "version": "5.49.1",
    "mode": "blocks",
    "protocol": "sse_v3",
    "api_prefix": "/gradio_api",
    "dependencies": [],
    "components": [],
    "connect_heartbeat": False,
}
API_INFO = {"named_endpoints": {}, "unnamed_endpoints": {}}
SESSION_COOKIE = ("route", "replica-7")
TRICKLE_LIMIT_S = 600  # a trickle ends by itself after this long, whatever the test does
API_BASE_URL = "http://127.0.0.1:8600"


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]  # names in lower case


@dataclass
class Exchange:
    """One request being answered: its path and a writer for the raw response bytes."""

    path: str
    handler: BaseHTTPRequestHandler
    stop: threading.Event

    def write(self, data: bytes) -> bool:
        """Send `data`; False once the client has gone."""
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
        except OSError:
            return False
        return True

    def respond(self, status: int, body: bytes = b"", **headers: str) -> None:
        """A whole response with a Content-Length."""
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


@dataclass
class RawServer:
    """Serves `routes` (path without query -> function) until closed; 404 for anything else.
    With `tls` (a server context), over https."""

    routes: dict[str, Route] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.seen.append(Seen(path, {k.lower(): v for k, v in self.headers.items()}))
                exchange = Exchange(path, self, server.stop)
                route = server.routes.get(path)
                if route is None:
                    exchange.respond(404, b"not here")
                else:
                    route(exchange)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The server's origin, without a trailing slash."""
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def requests_to(self, path: str) -> list[Seen]:
        """The recorded requests for `path`."""
        return [s for s in self.seen if s.path == path]

    def close(self) -> None:
        """Stop serving; trickles and streams end at their next step."""
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pose_as_gradio(server: RawServer) -> RawServer:
    """Add the routes gradio_client's Client reads when it connects; the config sets a cookie."""
    name, value = SESSION_COOKIE
    server.routes["/config"] = lambda ex: ex.respond(
        200,
        json.dumps(GRADIO_CONFIG).encode(),
        Content_Type="application/json",
        Set_Cookie=f"{name}={value}; Path=/",
    )
    server.routes["/gradio_api/info"] = lambda ex: ex.respond(
        200, json.dumps(API_INFO).encode(), Content_Type="application/json"
    )
    return server


def tiny_glb() -> bytes:
    """A minimal valid GLB: the header and one JSON chunk."""
    doc = b'{"asset":{"version":"2.0"}}'
    doc += b" " * (-len(doc) % 4)
    chunk = struct.pack("<I", len(doc)) + b"JSON" + doc
    return b"glTF" + struct.pack("<II", 2, 12 + len(chunk)) + chunk


def serve_bytes(data: bytes, content_type: str = "model/gltf-binary") -> Route:
    """A route answering 200 with `data`."""
    return lambda ex: ex.respond(200, data, Content_Type=content_type)


def redirect_to(location: str, status: int = 302) -> Route:
    """A route answering a redirect to `location`."""
    return lambda ex: ex.respond(status, b"", Location=location)


def trickle(prefix: bytes = b"HTTP/1.1 200 OK\r\nX-Slow: ", interval_s: float = 1.0) -> Route:
    """A route that sends `prefix`, then one more byte every `interval_s`, a byte at a time,
    until the client goes or the server closes (and at most TRICKLE_LIMIT_S)."""

    def route(ex: Exchange) -> None:
        data = iter(prefix)
        for _ in range(int(TRICKLE_LIMIT_S / interval_s)):
            byte = next(data, ord("a"))
            if not ex.write(bytes([byte])) or ex.stop.wait(interval_s):
                return

    return route


def stream(head: bytes, total: int, block: int = 64 * 1024) -> Route:
    """A route that answers 200 with `total` bytes: `head`, then garbage made block by block as
    the client reads (never held whole), until the client goes."""

    def route(ex: Exchange) -> None:
        filler = bytes((i * 151 + 7) % 256 for i in range(block))
        header = f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
        if not ex.write(header.encode() + head):
            return
        sent = len(head)
        while sent < total and not ex.stop.is_set():
            piece = filler[: min(block, total - sent)]
            if not ex.write(piece):
                return
            sent += len(piece)

    return route


def threads_named(prefix: str) -> list[threading.Thread]:
    """The live threads whose name starts with `prefix`."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def self_signed_certificate(folder: Path) -> tuple[Path, Path] | None:
    """A certificate and key for 127.0.0.1 made by the openssl command; None without it."""
    if shutil.which("openssl") is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for `cert`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_for(
    service: StudioService | ServiceGetter, host: str = "127.0.0.1", **kwargs: Any
) -> TestClient:
    """A TestClient of the REST API on `service` (left open at its end), calling from `host`."""
    app = create_api_app(service, close_on_shutdown=False)
    return TestClient(app, base_url=API_BASE_URL, client=(host, 50000), **kwargs)


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    """Check that `response` is the API's error shape with `status` (and `error`); its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "details"}, body
    if error is not None:
        assert body["error"] == error, body
    return body
