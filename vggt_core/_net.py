"""Network rules of the Space adapter: where credentials may go, one TLS context, and a
watchdog that ends any wait at its deadline or on cancel."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any, Literal

import httpx

__all__ = [
    "TraceRequests",
    "Watchdog",
    "http_url",
    "private_channel",
    "sends_credentials",
    "tls_context",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit; None for anything else."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        return None
    return parsed.scheme, parsed.host.lower(), parsed.port or _DEFAULT_PORTS[parsed.scheme]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def private_channel(url: str) -> bool:
    """True for https, or plain http to this machine (loopback): nobody else reads it."""
    origin = url_origin(url)
    return origin is not None and (origin[0] == "https" or _is_loopback(origin[1]))


def sends_credentials(url: str, backend_src: str) -> bool:
    """Whether a request to `url` may carry the client's token and cookies.

    Only to the backend's own origin (scheme, host and port of `backend_src`, the address
    gradio_client resolved: a Space's own hf.space host), and only over https, or over plain
    http when the backend is on loopback.
    """
    origin = url_origin(url)
    return origin is not None and origin == url_origin(backend_src) and private_channel(url)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context (httpx's default: certifi or SSL_CERT_FILE/DIR) for all calls."""
    # gradio_client makes a new httpx client for every request (each upload, the queue, the event
    # stream, the heartbeat), and building the default context loads the CA bundle: ~25 ms of CPU
    # each time, ~0.25 s per run. A built context is reused as it is.
    return httpx.create_ssl_context()


class Watchdog:
    """Ends network waits at a deadline, or when `should_cancel()` says so, by shutting down the
    sockets of the requests traced to it.

    A read timeout starts again with every byte, so a server that trickles bytes would hold a
    wait (and its thread) forever; shutting a socket down wakes the thread blocked on it at once.
    Requests are traced through httpcore's `trace` extension, which hands over each new
    connection's stream. As a context manager it also watches from a thread of its own, for a
    caller that is itself blocked reading.
    """

    def __init__(
        self, deadline: float, should_cancel: Callable[[], bool] | None, poll_s: float
    ) -> None:
        self.deadline = deadline
        self.reason: Literal["timeout", "cancelled"] | None = None
        self._should_cancel = should_cancel
        self._poll_s = max(poll_s, 0.01)
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: keep each new connection's socket, and its TLS wrapper
        (wrapping detaches the plain socket object, which can then no longer be shut down)."""
        if not event.endswith(("connect_tcp.complete", "start_tls.complete")):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.add(sock)
            fired = self.reason is not None
        if fired:
            _shut(sock)  # connected after the end: it ends at once too

    def check(self) -> Literal["timeout", "cancelled"] | None:
        """Whether the wait must end (firing if so): cancelled, past the deadline, or neither."""
        if self.reason is None:
            if self._should_cancel is not None and self._should_cancel():
                self.fire("cancelled")
            elif time.monotonic() >= self.deadline:
                self.fire("timeout")
        return self.reason

    def fire(self, reason: Literal["timeout", "cancelled"]) -> None:
        """End every traced connection, now and from now on."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _watch(self) -> None:
        while not self._done.wait(self._poll_s) and self.check() is None:
            pass

    def __enter__(self) -> Watchdog:
        self._thread = threading.Thread(target=self._watch, name="vggt-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, 10 * self._poll_s))


def _shut(sock: socket.socket) -> None:
    # The plain socket's method, also for an SSLSocket: its own shutdown() would drop the TLS
    # state under the thread that is reading through it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class TraceRequests(httpx.Auth):
    """Not authentication: puts the watchdog's trace on each request gradio_client makes while
    its Client is built (those calls take `httpx_kwargs`, which have no `extensions`, but an
    `auth` may set a request's extensions)."""

    def __init__(self, watch: Watchdog) -> None:
        self.watch = watch
        self.active = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.active:
            request.extensions["trace"] = self.watch.trace
        yield request


def http_url(base: httpx.URL, reference: str) -> httpx.URL | None:
    """`reference` resolved against `base`, when that makes an http(s) URL."""
    try:
        target = base.join(reference)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return target if url_origin(str(target)) is not None else None
