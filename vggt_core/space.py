"""VGGTSpace: the gradio_client adapter for the VGGT Space's API (see shared/SPACE_API.md)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import ssl
import time
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


def clip_text(text: str, limit: int = MAX_BACKEND_TEXT) -> str:
    """`text` cut to `limit` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


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
    ) -> None:
        self.backend = backend.strip()
        self._token = token or None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.job_timeout_s = job_timeout_s
        self.download_timeout_s = download_timeout_s
        self.poll_interval_s = poll_interval_s

    def __repr__(self) -> str:
        return f"VGGTSpace({self.backend!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        """True when an HF token will be sent."""
        return self._token is not None

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
    def session(self) -> Iterator[SpaceSession]:
        """One gradio Client for one run, closed (threads and all) when the block ends."""
        try:
            self._check_space_stage()
            client = Client(
                self.backend,
                token=self._token or False,  # None would send a locally saved token
                verbose=False,
                download_files=False,
                ssl_verify=_tls_context(),  # type: ignore[arg-type]  # passed on as httpx's verify=
                httpx_kwargs={"timeout": self._timeout()},
                analytics_enabled=False,
            )
        except SpaceError:
            raise
        except Exception as exc:
            raise self._explain(exc) from exc
        session = SpaceSession(self, client)
        try:
            yield session
        finally:
            session.close()

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
        with contextlib.suppress(Exception):
            self.client.close()
        for name in ("executor", "helper_executor", "stream_executor"):
            pool = getattr(self.client, name, None)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

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
        self, ref: FileRef, dest: Path, kind: Literal["glb", "predictions"] = "glb"
    ) -> int:
        """Stream a file to a temp name beside `dest`, check it, rename it into place; bytes."""
        label = "GLB" if kind == "glb" else "predictions.npz"
        tmp = temp_sibling(dest)
        deadline = time.monotonic() + self.space.download_timeout_s
        headers = dict(self.client.headers)
        try:
            with (
                httpx.stream(
                    "GET",
                    ref.url,
                    headers=headers,
                    cookies=self.client.cookies,
                    timeout=self.space._timeout(),
                    verify=_tls_context(),
                    follow_redirects=True,
                ) as response,
                tmp.open("xb") as out,
            ):
                if response.status_code != 200:
                    raise SpaceError(
                        f"Downloading the {label} failed: the backend answered HTTP "
                        f"{response.status_code}.",
                        kind="bad_download",
                    )
                size = 0
                # Chunks as they arrive: a fixed size would wait for it, past the deadline.
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > _MAX_DOWNLOAD_BYTES:
                        raise SpaceError(f"The {label} is larger than 4 GB.", kind="bad_download")
                    if time.monotonic() > deadline:
                        raise SpaceError(
                            f"Downloading the {label} took longer than "
                            f"{self.space.download_timeout_s:.0f} s; retry later.",
                            kind="timeout",
                        )
                    out.write(chunk)
            _check_file(tmp, kind)
            commit_file(tmp, dest)
            return size
        except SpaceError:
            raise
        except Exception as exc:
            raise self.space._explain(exc) from exc
        finally:
            tmp.unlink(missing_ok=True)


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


def _check_file(path: Path, kind: Literal["glb", "predictions"]) -> None:
    size = path.stat().st_size
    if kind == "glb":
        with path.open("rb") as handle:
            header = handle.read(12)
        if len(header) < 12 or header[:4] != b"glTF":
            raise SpaceError(
                "The backend's download is not a GLB 3D model (wrong file type).",
                kind="bad_download",
            )
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
