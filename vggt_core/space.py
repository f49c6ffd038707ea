"""VGGTSpace: the gradio_client adapter for the VGGT Space's API (see shared/SPACE_API.md)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
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
from gradio_client.utils import Status

from ._download import download, glb_size_cap, predictions_size_cap
from ._net import TraceRequests, Watchdog, private_channel, sends_credentials, tls_context
from .errors import SpaceCancelled, SpaceError, bounded_text, explain_error, public_backend
from .models import VGGTSettings

__all__ = [
    "CheckReport",
    "FileRef",
    "ReconstructResult",
    "RenderResult",
    "SpaceSession",
    "StatusReport",
    "VGGTSpace",
    "glb_size_cap",
    "predictions_size_cap",
    "sends_credentials",
]

UPLOAD_API = "/update_gallery_on_upload"
RECONSTRUCT_API = "/gradio_demo"
RENDER_API = "/update_visualization"
# The Space answers a re-render of a folder it no longer holds with no file and this message.
FORGOTTEN_PREFIX = "No reconstruction available"
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
    frames: list[str] = field(default_factory=list)  # the frame filter's choices but "All"


@dataclass(frozen=True)
class RenderResult:
    """What `/update_visualization` returned: the GLB, or None when the Space forgot the run."""

    glb: FileRef | None
    message: str

    @property
    def forgotten(self) -> bool:
        """True when the backend no longer holds the run's folder (a restarted Space)."""
        return self.glb is None


@dataclass(frozen=True)
class CheckReport:
    """Whether the backend serves what this app needs, in plain words."""

    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


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
        hub_endpoint: str | None = None,
    ) -> None:
        self.backend = backend.strip()
        self.hub_endpoint = hub_endpoint  # None: the Hub huggingface_hub is configured for
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
        return f"VGGTSpace({self.label!r}, token={'set' if self._token else 'none'})"

    @property
    def label(self) -> str:
        """The backend as it may be stored and shown: no credentials, no query."""
        return public_backend(self.backend)

    @property
    def has_token(self) -> bool:
        """True when an HF token will be sent: one is set, and the backend is a Space (https),
        an https URL or an http URL on this machine; never in the clear over a network."""
        return self._token is not None and (not self.is_url or private_channel(self.backend))

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
        hub = huggingface_hub.HfApi(endpoint=self.hub_endpoint, token=self._token or False)
        runtime = hub.get_space_runtime(self.backend)
        if str(runtime.stage).upper() in {"BUILDING", "RUNNING_BUILDING", "APP_STARTING"}:
            raise SpaceError(
                f"The Space {self.label} is starting or building; retry in a few minutes.",
                kind="space_state",
            )

    @contextlib.contextmanager
    def session(
        self, should_cancel: Callable[[], bool] | None = None, *, resume: str | None = None
    ) -> Iterator[SpaceSession]:
        """One gradio Client for one run, closed (threads and all) when the block ends.

        Connecting ends within `open_timeout_s` (SpaceError "timeout"), or as soon as
        `should_cancel()` is true (SpaceCancelled). `resume` is the session hash of an earlier
        session whose server-side state (the frame filter's choices) this one continues.
        """
        client = self._open_client(should_cancel)
        if resume:
            client.session_hash = resume
        session = SpaceSession(self, client)
        try:
            yield session
        finally:
            session.close()

    def _build_client(self, tracer: TraceRequests) -> Client:
        self._check_space_stage()
        client = Client(
            self.backend,
            # False, not None: None would send a locally saved token.
            token=self._token if self.has_token else False,
            verbose=False,
            download_files=False,
            ssl_verify=tls_context(),  # passed on as httpx's verify=
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
        watch = Watchdog(
            time.monotonic() + self.open_timeout_s, should_cancel, self.poll_interval_s
        )
        tracer = TraceRequests(watch)
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
                f"The backend {self.label} did not answer within {self.open_timeout_s:.0f} s "
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
                f"{self.label} answers, but does not serve the VGGT API this app needs.",
                missing,
            )
        return CheckReport(True, f"{self.label} serves the VGGT API.", extras)


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
            message=None if unit.desc is None else bounded_text(str(unit.desc)),
        )
    if code == Status.LOG and update.log:
        return StatusReport(eta=update.eta, message=bounded_text(str(update.log[0])))
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

    @property
    def session_hash(self) -> str:
        """The id the backend keeps this session's state under (an hour after it closes)."""
        return str(self.client.session_hash)

    def close(self) -> None:
        """Stop the client's heartbeat and its thread pools."""
        _close_client(self.client)

    @property
    def can_render(self) -> bool:
        """True when the backend serves `/update_visualization` with the parameters we send."""
        endpoint = self._endpoint(RENDER_API)
        if endpoint is None:
            return False
        have = {p.get("parameter_name") for p in endpoint.get("parameters", [])}
        return set(REQUIRED_PARAMETERS[RECONSTRUCT_API]) <= have

    def _endpoint(self, name: str) -> dict[str, Any] | None:
        endpoint: dict[str, Any] | None = self.api.get("named_endpoints", {}).get(name)
        return endpoint

    @property
    def is_vggt_1b(self) -> bool:
        """True when `/gradio_demo` is VGGT-1B's (it takes `prediction_mode` and `frame_filter`);
        other models (e.g. `facebook/vggt-omega`, 512 px, patch 16) size images differently."""
        endpoint = self._endpoint(RECONSTRUCT_API) or {}
        have = {p.get("parameter_name") for p in endpoint.get("parameters", [])}
        return {"prediction_mode", "frame_filter"} <= have

    def missing_api(self, only: str | None = None) -> list[str]:
        """What this app needs but the backend does not serve, one sentence each."""
        problems = []
        for name, wanted in REQUIRED_PARAMETERS.items():
            if only is not None and name != only:
                continue
            endpoint = self._endpoint(name)
            if endpoint is None:
                problems.append(f"The endpoint {name} is missing.")
                continue
            have = {p.get("parameter_name") for p in endpoint.get("parameters", [])}
            lacking = [p for p in wanted if p not in have]
            if lacking:
                problems.append(f"{name} lacks the parameter(s) {', '.join(lacking)}.")
        return problems

    def _require_api(self, step: str | None = None) -> None:
        if step is not None and not self.missing_api(step):
            return
        problems = self.missing_api()
        if problems:
            raise SpaceError(
                f"The backend {self.space.label} does not serve the VGGT API this app needs "
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
        # Only the upload's own endpoint is needed here: another model's backend (a different
        # /gradio_demo) still gets the files, and reconstruct() then names what it lacks.
        self._require_api(UPLOAD_API)
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
        message = bounded_text(str(result[1])) if len(result) > 1 and result[1] is not None else ""
        glb = _file_ref(result[0])
        if glb is None:
            raise SpaceError(
                f"The backend returned no 3D model. Its message: {message or 'none'}",
                kind="app_error",
            )
        predictions = None
        if self.predictions_index is not None and len(result) > self.predictions_index:
            predictions = _file_ref(result[self.predictions_index])
        frames = _choices(result[2]) if len(result) > 2 else []
        return ReconstructResult(glb=glb, predictions=predictions, message=message, frames=frames)

    def render(
        self,
        target_dir: str,
        settings: VGGTSettings,
        *,
        frame_filter: str = "All",
        should_cancel: Callable[[], bool] | None = None,
    ) -> RenderResult:
        """Re-filter the backend's saved predictions with new settings (`/update_visualization`,
        CPU only); a result without a GLB means the backend forgot the run."""
        try:
            job = self.client.submit(
                target_dir=target_dir,
                **settings.space_kwargs(frame_filter),
                is_example="False",
                api_name=RENDER_API,
            )
        except Exception as exc:
            raise self.space._explain(exc) from exc
        result = self._run_job(job, None, should_cancel)
        if not isinstance(result, list | tuple) or len(result) < 2:
            raise SpaceError(
                f"The backend answered {RENDER_API} in an unexpected shape.", kind="api_changed"
            )
        message = bounded_text(str(result[1] or ""))
        glb = _file_ref(result[0])
        if glb is None and not message.startswith(FORGOTTEN_PREFIX):
            raise SpaceError(
                f"The backend returned no 3D model. Its message: {message or 'none'}",
                kind="app_error",
            )
        return RenderResult(glb=glb, message=message)

    def download(
        self,
        ref: FileRef,
        dest: Path,
        kind: Literal["glb", "predictions"] = "glb",
        *,
        max_bytes: int | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> int:
        """Fetch a file the backend offered into `dest` (see `_download.download`); bytes."""
        return download(self, ref, dest, kind, max_bytes=max_bytes, should_cancel=should_cancel)


def _stream_error(streams: list[concurrent.futures.Future[Any]]) -> BaseException | None:
    """Why the client's event stream ended, when it ended by an error."""
    for stream in reversed(streams):
        if stream.done() and not stream.cancelled():
            error: BaseException | None = stream.exception()
            if error is not None:
                return error
    return None


def _choices(update: Any) -> list[str]:
    """The frame filter's choices from `/gradio_demo`'s dropdown update, "All" left out."""
    choices = update.get("choices") if isinstance(update, dict) else None
    if not isinstance(choices, list):
        return []
    names = [c[0] if isinstance(c, list | tuple) and c else c for c in choices]
    return [bounded_text(str(n)) for n in names if isinstance(n, str) and n != "All"]


def _file_ref(value: Any) -> FileRef | None:
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str) and url:
            name = value.get("orig_name") or Path(str(value.get("path", "file"))).name
            return FileRef(url=url, name=str(name))
    return None
