"""VGGTSpace: the gradio_client adapter for the VGGT Space's API (see shared/SPACE_API.md)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Telemetry is read from the environment when a Client is built; the constructor flag alone does
# nothing. A user who wants it on can still set the variable before this import.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # read when huggingface_hub is imported

import httpx
import huggingface_hub
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status

from .models import VGGTSettings
from .storage import commit_file, temp_sibling

__all__ = [
    "CheckReport",
    "FileRef",
    "ReconstructResult",
    "SpaceCancelled",
    "SpaceError",
    "SpaceSession",
    "StatusReport",
    "VGGTSpace",
    "clip_text",
    "explain_error",
    "glb_size_cap",
    "predictions_size_cap",
    "sends_credentials",
]

UPLOAD_API = "/update_gallery_on_upload"
RECONSTRUCT_API = "/gradio_demo"
REQUIRED_PARAMETERS: dict[str, tuple[str, ...]] = {
    UPLOAD_API: ("input_video", "input_images"),
    RECONSTRUCT_API: (
        "target_dir",
        "conf_thres",
        "frame_filter",
        "mask_black_bg",
        "mask_white_bg",
        "show_cam",
        "mask_sky",
        "prediction_mode",
    ),
}
ErrorKind = Literal[
    "unreachable",
    "space_state",
    "quota",
    "no_gpu",
    "queue_full",
    "app_error",
    "timeout",
    "api_changed",
    "bad_download",
    "connection_lost",
    "cancelled",
    "unexpected",
]
_QUOTA = re.compile(r"exceeded your GPU quota.*?Try again in (\d+):(\d\d):(\d\d)", re.S | re.I)
_MAX_DOWNLOAD_BYTES = 4 * 1024**3
# What is kept of a text the backend sent (an error, a log line): enough to read, never megabytes.
MAX_BACKEND_TEXT = 2000
# VGGT's input frames are at most 518×518: one point, one depth, one colour per pixel.
FRAME_PIXELS = 518 * 518
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GLB_MAGIC = b"glTF"
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive: it starts with a local file header
_NOT_A_GLB = "The backend's download is not a GLB 3D model (wrong file type)."


def clip_text(text: str, limit: int = MAX_BACKEND_TEXT) -> str:
    """`text` cut to `limit` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def glb_size_cap(frames: int) -> int:
    """The most bytes a GLB of `frames` frames may be: every pixel a point, twice over.

    A point is 16 bytes in the GLB (three float32 and four colour bytes); 32 a point leaves
    room for padding, plus 64 KiB a frame for its camera and 1 MiB for the JSON and headers.
    """
    return max(1, frames) * (FRAME_PIXELS * 32 + 64 * 1024) + 1024**2


def predictions_size_cap(frames: int) -> int:
    """The most bytes a predictions.npz of `frames` frames may be, with twice the room needed.

    VGGT's predictions hold 12 float32 a pixel (depth, its confidence, two point maps, the
    points' confidence, the colours): 48 bytes; 128 allows float64 point maps and more.
    """
    return max(1, frames) * (FRAME_PIXELS * 128 + 64 * 1024) + 1024**2


def _origin(url: str) -> tuple[str, str, int] | None:
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


def _private_channel(url: str) -> bool:
    """True for https, or plain http to this machine (loopback): nobody else reads it."""
    origin = _origin(url)
    return origin is not None and (origin[0] == "https" or _is_loopback(origin[1]))


def sends_credentials(url: str, backend_src: str) -> bool:
    """Whether a request to `url` may carry the client's token and cookies.

    Only to the backend's own origin (scheme, host and port of `backend_src`, the address
    gradio_client resolved: a Space's own hf.space host), and only over https, or over plain
    http when the backend is on loopback.
    """
    origin = _origin(url)
    return origin is not None and origin == _origin(backend_src) and _private_channel(url)


class SpaceError(Exception):
    """A backend failure as a message a person can act on; `kind` says which failure it was."""

    def __init__(
        self, message: str, *, kind: ErrorKind, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


class SpaceCancelled(SpaceError):
    """The run was cancelled by the user while the backend worked on it."""

    def __init__(self) -> None:
        super().__init__("Cancelled by the user.", kind="cancelled")


@dataclass(frozen=True)
class StatusReport:
    """The backend's latest word on a job: queue place, ETA, progress fraction, log line."""

    rank: int | None = None
    queue_size: int | None = None
    eta: float | None = None
    fraction: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class FileRef:
    """A file the backend offers for download."""

    url: str
    name: str


@dataclass(frozen=True)
class ReconstructResult:
    """What `/gradio_demo` returned: the GLB, predictions when offered, the log message."""

    glb: FileRef
    predictions: FileRef | None
    message: str


@dataclass(frozen=True)
class CheckReport:
    """Whether the backend serves what this app needs, in plain words."""

    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context (httpx's default: certifi or SSL_CERT_FILE/DIR) for all calls."""
    # gradio_client makes a new httpx client for every request (each upload, the queue, the event
    # stream, the heartbeat), and building the default context loads the CA bundle: ~25 ms of CPU
    # each time, ~0.25 s per run. A built context is reused as it is.
    return httpx.create_ssl_context()


def _hms_to_s(hours: str, minutes: str, seconds: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def explain_error(exc: BaseException, *, backend: str, has_token: bool) -> SpaceError:
    """Turn whatever gradio_client or httpx raised into a SpaceError a person can act on."""
    if isinstance(exc, SpaceError):
        return exc
    text = str(exc)
    if isinstance(exc, AppError):
        quota = _QUOTA.search(text)
        if quota:
            wait = _hms_to_s(*quota.groups())
            who = "your account" if has_token else "anonymous users"
            fix = "retry" if has_token else "add an HF token or retry"
            return SpaceError(
                f"The Space's GPU quota for {who} is used up; {fix} in {_minutes(wait)}.",
                kind="quota",
                retry_after_s=wait,
            )
        if "no gpu was available" in text.lower():
            return SpaceError(
                "No GPU was free on the Space (its GPU queue timed out); retry in a minute"
                + ("." if has_token else ", or add an HF token for a higher priority."),
                kind="no_gpu",
            )
        return SpaceError(
            f"The Space reported an error: {clip_text(text) or 'no details given'}",
            kind="app_error",
        )
    if isinstance(exc, QueueError):
        return SpaceError("The Space's queue is full; retry in a few minutes.", kind="queue_full")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return SpaceError(
            f"Cannot reach the backend {backend}: check the address and that it is running.",
            kind="unreachable",
        )
    if isinstance(exc, httpx.TimeoutException | TimeoutError | concurrent.futures.TimeoutError):
        return SpaceError(
            f"The backend {backend} stopped answering (timed out); retry later.", kind="timeout"
        )
    # A server killed mid-run shows as a cancelled job, a broken stream or a reset connection.
    if isinstance(
        exc, concurrent.futures.CancelledError | httpx.RemoteProtocolError | httpx.NetworkError
    ):
        return SpaceError(
            "The connection to the backend was lost during the run (it stopped or restarted); "
            "retry.",
            kind="connection_lost",
        )
    if isinstance(exc, ValueError) and "invalid state" in text:
        state = clip_text(text.split("invalid state:", 1)[-1].split(".")[0].strip(), 100)
        return SpaceError(
            f"The Space {backend} is not running ({state}); ask its owner or use another backend.",
            kind="space_state",
        )
    if type(exc).__name__ in {"RepositoryNotFoundError", "HfHubHTTPError"} or (
        isinstance(exc, ValueError) and "Could not find Space" in text
    ):
        hint = "" if has_token else " (a private Space needs an HF token)"
        return SpaceError(f"No Space named {backend} was found{hint}.", kind="unreachable")
    if isinstance(exc, httpx.HTTPError | OSError):
        return SpaceError(
            f"Talking to the backend {backend} failed: {type(exc).__name__}: {clip_text(text)}",
            kind="unreachable",
        )
    return SpaceError(
        f"Unexpected error talking to the backend: {type(exc).__name__}: {clip_text(text)}",
        kind="unexpected",
    )


class _Watchdog:
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

    def __enter__(self) -> _Watchdog:
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


class _TraceRequests(httpx.Auth):
    """Not authentication: puts the watchdog's trace on each request gradio_client makes while
    its Client is built (those calls take `httpx_kwargs`, which have no `extensions`, but an
    `auth` may set a request's extensions)."""

    def __init__(self, watch: _Watchdog) -> None:
        self.watch = watch
        self.active = True

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if self.active:
            request.extensions["trace"] = self.watch.trace
        yield request


def _close_client(client: Client) -> None:
    """Stop a Client's heartbeat and its thread pools."""
    with contextlib.suppress(Exception):
        client.close()
    for name in ("executor", "helper_executor", "stream_executor"):
        pool = getattr(client, name, None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _close_if_built(built: concurrent.futures.Future[Client]) -> None:
    """A Client that was built after its caller stopped waiting: nobody will use it."""
    if not built.cancelled() and built.exception() is None:
        _close_client(built.result())


class VGGTSpace:
    """Opens sessions (one gradio Client each) against a Space id or a Gradio server URL."""

    def __init__(
        self,
        backend: str,
        token: str | None = None,
        *,
        connect_timeout_s: float = 15.0,
        read_timeout_s: float = 60.0,
        job_timeout_s: float = 1800.0,
        download_timeout_s: float = 600.0,
        poll_interval_s: float = 0.1,
        open_timeout_s: float | None = None,
    ) -> None:
        self.backend = backend.strip()
        self._token = token or None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.job_timeout_s = job_timeout_s
        self.download_timeout_s = download_timeout_s
        self.poll_interval_s = poll_interval_s
        # Connecting makes up to three requests (the Hub's Space state, the config, the API):
        # by default room for two to connect and answer, a sleeping Space's wake-up included.
        self.open_timeout_s = (
            2 * (connect_timeout_s + read_timeout_s) if open_timeout_s is None else open_timeout_s
        )

    def __repr__(self) -> str:
        return f"VGGTSpace({self.backend!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        """True when an HF token will be sent: one is set, and the backend is a Space (https),
        an https URL or an http URL on this machine; never in the clear over a network."""
        return self._token is not None and (not self.is_url or _private_channel(self.backend))

    @property
    def is_url(self) -> bool:
        """True for an `http(s)://` backend, False for a Space id."""
        return self.backend.startswith(("http://", "https://"))

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.read_timeout_s,
            pool=self.connect_timeout_s,
        )

    def _explain(self, exc: BaseException) -> SpaceError:
        return explain_error(exc, backend=self.backend, has_token=self.has_token)

    def _check_space_stage(self) -> None:
        # gradio_client waits without bound while a Space builds; ask the Hub first instead.
        if self.is_url:
            return
        runtime = huggingface_hub.get_space_runtime(self.backend, token=self._token)
        if str(runtime.stage).upper() in {"BUILDING", "RUNNING_BUILDING", "APP_STARTING"}:
            raise SpaceError(
                f"The Space {self.backend} is starting or building; retry in a few minutes.",
                kind="space_state",
            )

    @contextlib.contextmanager
    def session(self, should_cancel: Callable[[], bool] | None = None) -> Iterator[SpaceSession]:
        """One gradio Client for one run, closed (threads and all) when the block ends.

        Connecting ends within `open_timeout_s` (SpaceError "timeout"), or as soon as
        `should_cancel()` is true (SpaceCancelled).
        """
        client = self._open_client(should_cancel)
        session = SpaceSession(self, client)
        try:
            yield session
        finally:
            session.close()

    def _build_client(self, tracer: _TraceRequests) -> Client:
        self._check_space_stage()
        client = Client(
            self.backend,
            # False, not None: None would send a locally saved token.
            token=self._token if self.has_token else False,
            verbose=False,
            download_files=False,
            ssl_verify=_tls_context(),  # type: ignore[arg-type]  # passed on as httpx's verify=
            httpx_kwargs={"timeout": self._timeout(), "auth": tracer},
            analytics_enabled=False,
        )
        tracer.active = False
        client.httpx_kwargs.pop("auth", None)  # the run's own requests are bounded elsewhere
        return client

    def _open_client(self, should_cancel: Callable[[], bool] | None) -> Client:
        """Build the Client in a helper thread, waiting for it until the deadline or a cancel.

        gradio_client's requests while connecting have only per-read timeouts, which a server
        trickling bytes never trips. At the end the watchdog shuts their sockets down, so the
        helper ends too; a Client that still gets built is closed.
        """
        watch = _Watchdog(
            time.monotonic() + self.open_timeout_s, should_cancel, self.poll_interval_s
        )
        tracer = _TraceRequests(watch)
        built: concurrent.futures.Future[Client] = concurrent.futures.Future()

        def build() -> None:
            try:
                client = self._build_client(tracer)
            except BaseException as exc:
                built.set_exception(exc)
            else:
                built.set_result(client)

        threading.Thread(target=build, name="vggt-connect", daemon=True).start()
        while not built.done() and watch.check() is None:
            concurrent.futures.wait([built], timeout=self.poll_interval_s)
        if watch.reason is not None and (not built.done() or built.exception() is not None):
            built.add_done_callback(_close_if_built)
            if watch.reason == "cancelled":
                raise SpaceCancelled
            raise SpaceError(
                f"The backend {self.backend} did not answer within {self.open_timeout_s:.0f} s "
                "while connecting; retry later.",
                kind="timeout",
            )
        exc = built.exception()
        if exc is not None:
            raise self._explain(exc) from exc
        return built.result()

    def check(self) -> CheckReport:
        """Connect, read `view_api` and say whether the endpoints and parameters are all there."""
        try:
            with self.session() as session:
                missing = session.missing_api()
                extras = (
                    ["It also returns predictions.npz."]
                    if session.predictions_index is not None
                    else ["It does not return predictions.npz (the real Space never does)."]
                )
        except SpaceError as exc:
            return CheckReport(False, str(exc))
        if missing:
            return CheckReport(
                False,
                f"{self.backend} answers, but does not serve the VGGT API this app needs.",
                missing,
            )
        return CheckReport(True, f"{self.backend} serves the VGGT API.", extras)


def _progress_of(update: Any) -> StatusReport | None:
    code = getattr(update, "code", None)
    if code is None:
        return None
    if code == Status.IN_QUEUE:
        return StatusReport(
            rank=update.rank, queue_size=update.queue_size, eta=update.eta, message="In queue"
        )
    if code == Status.PROGRESS and update.progress_data:
        unit = update.progress_data[-1]
        fraction = unit.progress
        if fraction is None and unit.index is not None and unit.length:
            fraction = unit.index / unit.length
        return StatusReport(
            eta=update.eta,
            fraction=None if fraction is None else min(max(float(fraction), 0.0), 1.0),
            message=None if unit.desc is None else clip_text(str(unit.desc)),
        )
    if code == Status.LOG and update.log:
        return StatusReport(eta=update.eta, message=clip_text(str(update.log[0])))
    if code in (Status.PROCESSING, Status.SENDING_DATA):
        return StatusReport(eta=update.eta, message="Processing")
    return None


class SpaceSession:
    """A run's conversation with the backend: upload, reconstruct, download."""

    def __init__(self, space: VGGTSpace, client: Client) -> None:
        self.space = space
        self.client = client
        try:
            self.api: dict[str, Any] = client.view_api(print_info=False, return_format="dict")
        except Exception as exc:
            self.close()
            raise space._explain(exc) from exc
        self.predictions_index = self._find_predictions_output()

    def close(self) -> None:
        """Stop the client's heartbeat and its thread pools."""
        _close_client(self.client)

    def _endpoint(self, name: str) -> dict[str, Any] | None:
        return self.api.get("named_endpoints", {}).get(name)

    def missing_api(self) -> list[str]:
        """What this app needs but the backend does not serve, one sentence each."""
        problems = []
        for name, wanted in REQUIRED_PARAMETERS.items():
            endpoint = self._endpoint(name)
            if endpoint is None:
                problems.append(f"The endpoint {name} is missing.")
                continue
            have = {p.get("parameter_name") for p in endpoint.get("parameters", [])}
            lacking = [p for p in wanted if p not in have]
            if lacking:
                problems.append(f"{name} lacks the parameter(s) {', '.join(lacking)}.")
        return problems

    def _require_api(self) -> None:
        problems = self.missing_api()
        if problems:
            raise SpaceError(
                f"The backend {self.space.backend} does not serve the VGGT API this app needs "
                f"(the Space may have changed): {' '.join(problems)}",
                kind="api_changed",
            )

    def _find_predictions_output(self) -> int | None:
        endpoint = self._endpoint(RECONSTRUCT_API)
        if endpoint is None:
            return None
        for index, output in enumerate(endpoint.get("returns", [])):
            label = str(output.get("label", "")).lower()
            if index > 0 and (output.get("component") == "File" or "npz" in label):
                return index
        return None

    def _run_job(
        self,
        job: Any,
        on_status: Callable[[StatusReport], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> Any:
        deadline = time.monotonic() + self.space.job_timeout_s
        last: StatusReport | None = None
        streams: list[concurrent.futures.Future[Any]] = []
        while not job.done():
            # gradio_client reads events in a stream thread; when that read fails (e.g. times
            # out on a frozen server) the job only says "cancelled", so keep the stream's future.
            stream = getattr(self.client, "streaming_future", None)
            if isinstance(stream, concurrent.futures.Future) and stream not in streams:
                streams.append(stream)
            if should_cancel is not None and should_cancel():
                with contextlib.suppress(Exception):
                    job.cancel()
                raise SpaceCancelled
            if time.monotonic() > deadline:
                with contextlib.suppress(Exception):
                    job.cancel()
                raise SpaceError(
                    f"The backend did not finish within {self.space.job_timeout_s:.0f} s; "
                    "retry later.",
                    kind="timeout",
                )
            report = _progress_of(job.status())
            if report is not None and report != last and on_status is not None:
                on_status(report)
                last = report
            # Wake as soon as the job ends, not at the next tick: a plain sleep here added
            # half a poll interval on average to every call (two per run).
            concurrent.futures.wait([job], timeout=self.space.poll_interval_s)
        try:
            return job.result(timeout=0)
        except concurrent.futures.CancelledError as exc:
            raise self.space._explain(_stream_error(streams) or exc) from exc
        except Exception as exc:
            raise self.space._explain(exc) from exc

    def upload(
        self,
        image_paths: Sequence[Path],
        *,
        on_status: Callable[[StatusReport], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> str:
        """Send the images (names already unique and order-preserving); return `target_dir`."""
        self._require_api()
        if not image_paths:
            raise SpaceError("The run has no images to send.", kind="app_error")
        try:
            job = self.client.submit(
                input_video=None,
                input_images=[handle_file(str(p)) for p in image_paths],
                api_name=UPLOAD_API,
            )
        except Exception as exc:
            raise self.space._explain(exc) from exc
        result = self._run_job(job, on_status, should_cancel)
        if not isinstance(result, list | tuple) or len(result) < 2 or not result[1]:
            raise SpaceError(
                f"The backend's {UPLOAD_API} answered in an unexpected shape; "
                "the Space's API may have changed.",
                kind="api_changed",
            )
        return str(result[1])

    def reconstruct(
        self,
        target_dir: str,
        settings: VGGTSettings,
        *,
        on_status: Callable[[StatusReport], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        frame_filter: str = "All",
    ) -> ReconstructResult:
        """Run `/gradio_demo` on an uploaded folder; report progress; return the files offered."""
        self._require_api()
        try:
            job = self.client.submit(
                target_dir=target_dir,
                **settings.space_kwargs(frame_filter),
                api_name=RECONSTRUCT_API,
            )
        except Exception as exc:
            raise self.space._explain(exc) from exc
        result = self._run_job(job, on_status, should_cancel)
        if not isinstance(result, list | tuple) or not result:
            raise SpaceError(
                "The backend answered /gradio_demo in an unexpected shape.", kind="api_changed"
            )
        message = clip_text(str(result[1])) if len(result) > 1 and result[1] is not None else ""
        glb = _file_ref(result[0])
        if glb is None:
            raise SpaceError(
                f"The backend returned no 3D model. Its message: {message or 'none'}",
                kind="app_error",
            )
        predictions = None
        if self.predictions_index is not None and len(result) > self.predictions_index:
            predictions = _file_ref(result[self.predictions_index])
        return ReconstructResult(glb=glb, predictions=predictions, message=message)

    def download(
        self,
        ref: FileRef,
        dest: Path,
        kind: Literal["glb", "predictions"] = "glb",
        *,
        max_bytes: int | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> int:
        """Stream a file to a temp name beside `dest`, check it, rename it into place; bytes.

        The whole download, the wait for the response's headers included, ends within
        `download_timeout_s` (SpaceError "timeout"), and at once when `should_cancel()` (asked
        from a watchdog thread too) is true (SpaceCancelled). The bytes are judged as they
        arrive: a GLB must start with its magic and declare at most `max_bytes`, an .npz with
        a zip entry, and nothing grows past `max_bytes` (see glb_size_cap and
        predictions_size_cap; 4 GB when not given).

        The client's credentials (its token header and cookies) go only where
        `sends_credentials` allows: the backend's own origin, privately. A file offered on
        another origin is fetched without them, not refused: a Space's files may be served
        from elsewhere (a CDN), and a file that needs the token then fails plainly (HTTP 401)
        instead of handing the token to a host the user never chose. Redirects are followed
        here, at most _MAX_REDIRECTS, each hop judged by its own origin.
        """
        label = "GLB" if kind == "glb" else "predictions.npz"
        intake = _Intake(kind, label, _MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes)
        tmp = temp_sibling(dest)
        watch = _Watchdog(
            time.monotonic() + self.space.download_timeout_s,
            should_cancel,
            self.space.poll_interval_s,
        )
        try:
            with (
                watch,
                httpx.Client(
                    timeout=self.space._timeout(), verify=_tls_context(), follow_redirects=False
                ) as http,
            ):
                response = self._get_following_redirects(http, ref.url, label, watch)
                try:
                    if response.status_code != 200:
                        raise SpaceError(
                            f"Downloading the {label} failed: the backend answered HTTP "
                            f"{response.status_code}.",
                            kind="bad_download",
                        )
                    with tmp.open("xb") as out:
                        # Chunks as they arrive: a fixed size would wait for it.
                        for chunk in response.iter_bytes():
                            self._stop_if_ended(watch, label)
                            intake.take(chunk)  # before writing: garbage is never written
                            out.write(chunk)
                finally:
                    response.close()
                # A shut socket can look like the end of a body without a length.
                self._stop_if_ended(watch, label)
            _check_file(tmp, kind)
            commit_file(tmp, dest)
            return intake.size
        except SpaceError:
            raise
        except Exception as exc:
            if watch.reason is not None:  # the watchdog shut the socket: that is the cause
                self._stop_if_ended(watch, label)
            raise self.space._explain(exc) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _stop_if_ended(self, watch: _Watchdog, label: str) -> None:
        reason = watch.check()
        if reason == "cancelled":
            raise SpaceCancelled
        if reason == "timeout":
            raise SpaceError(
                f"Downloading the {label} took longer than "
                f"{self.space.download_timeout_s:.0f} s; retry later.",
                kind="timeout",
            )

    def _get_following_redirects(
        self, http: httpx.Client, url: str, label: str, watch: _Watchdog
    ) -> httpx.Response:
        """The streamed response at the end of `url`'s redirects (the caller closes it)."""
        base = httpx.URL(self.client.src)
        for _hop in range(_MAX_REDIRECTS + 1):
            target = _http_url(base, url)
            if target is None:
                raise SpaceError(
                    f"Downloading the {label} failed: the backend pointed to "
                    f"{clip_text(url, 200)}, not an http(s) address.",
                    kind="bad_download",
                )
            http.cookies.clear()  # cookies a hop set are not carried to the next
            request = http.build_request(
                "GET",
                target,
                headers=self._headers_for(str(target)),
                extensions={"trace": watch.trace},
            )
            response = http.send(request, stream=True)
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            response.close()
            base, url = target, response.headers["location"]
        raise SpaceError(
            f"Downloading the {label} failed: more than {_MAX_REDIRECTS} redirects.",
            kind="bad_download",
        )

    def _headers_for(self, url: str) -> dict[str, str]:
        """The client's headers and cookies for the backend's own origin; else none of them."""
        if not sends_credentials(url, self.client.src):
            agent = self.client.headers.get("user-agent")
            return {"user-agent": agent} if agent else {}
        headers = dict(self.client.headers)
        if self.client.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.client.cookies.items())
        return headers


def _http_url(base: httpx.URL, reference: str) -> httpx.URL | None:
    """`reference` resolved against `base`, when that makes an http(s) URL."""
    try:
        target = base.join(reference)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return target if _origin(str(target)) is not None else None


def _stream_error(streams: list[concurrent.futures.Future[Any]]) -> BaseException | None:
    """Why the client's event stream ended, when it ended by an error."""
    for stream in reversed(streams):
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            return stream.exception()
    return None


def _file_ref(value: Any) -> FileRef | None:
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str) and url:
            name = value.get("orig_name") or Path(str(value.get("path", "file"))).name
            return FileRef(url=url, name=str(name))
    return None


class _Intake:
    """Judges a download as it arrives, before each chunk is written: its kind from its first
    bytes, a GLB's declared length against the cap, and its size against both."""

    def __init__(self, kind: Literal["glb", "predictions"], label: str, cap: int) -> None:
        self.kind = kind
        self.label = label
        self.cap = cap
        self.size = 0
        self.declared: int | None = None
        self._head = b""

    def take(self, chunk: bytes) -> None:
        """Count `chunk` in; raise SpaceError as soon as the download cannot be right."""
        if len(self._head) < 12:
            self._head += chunk[: 12 - len(self._head)]
            self._check_head()
        self.size += len(chunk)
        if self.declared is not None and self.size > self.declared:
            raise SpaceError(
                f"The GLB download is longer than the {self.declared:,} bytes its header gives.",
                kind="bad_download",
            )
        if self.size > self.cap:
            raise SpaceError(
                f"The {self.label} download is larger than {self.cap:,} bytes, more than this "
                "run can produce.",
                kind="bad_download",
            )

    def _check_head(self) -> None:
        head = self._head
        if self.kind == "predictions":
            if len(head) >= 4 and head[:4] != _ZIP_MAGIC:
                raise SpaceError(
                    "The predictions.npz download is not an .npz archive (wrong file type).",
                    kind="bad_download",
                )
            return
        if len(head) >= 4 and head[:4] != _GLB_MAGIC:
            raise SpaceError(_NOT_A_GLB, kind="bad_download")
        if len(head) == 12:
            declared = int.from_bytes(head[8:12], "little")
            if declared > self.cap:
                raise SpaceError(
                    f"The GLB says it is {declared:,} bytes, more than the {self.cap:,} bytes a "
                    "model of this run can be.",
                    kind="bad_download",
                )
            self.declared = declared


def _check_file(path: Path, kind: Literal["glb", "predictions"]) -> None:
    size = path.stat().st_size
    if kind == "glb":
        with path.open("rb") as handle:
            header = handle.read(12)
        if len(header) < 12 or header[:4] != _GLB_MAGIC:
            raise SpaceError(_NOT_A_GLB, kind="bad_download")
        declared = int.from_bytes(header[8:12], "little")
        if declared != size:
            raise SpaceError(
                f"The GLB download is incomplete: {size:,} of {declared:,} bytes arrived.",
                kind="bad_download",
            )
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    raise zipfile.BadZipFile
        except (zipfile.BadZipFile, OSError, EOFError):
            raise SpaceError(
                "The predictions.npz download is damaged or incomplete.", kind="bad_download"
            ) from None
