"""What the verbs act on: the local storage (through StudioService) or a remote studio's REST API.

Both sides answer with the core's models (VGGTRun), so every verb is written once.
"""

from __future__ import annotations

import abc
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from ..config import StudioConfig
from ..errors import VGGTError, reads_unreachable
from ..heartbeat import live_workers
from ..models import RenderStatus, RunStatus, RunVersion, VGGTRun, VGGTSettings
from ..service import StudioService

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CheckResult",
    "CliError",
    "LocalStudio",
    "RemoteStudio",
    "Started",
    "Studio",
    "glb_name",
    "merged_settings",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
POLL_S = 0.25
SUFFIXES = {"glb": ".glb", "predictions": ".npz"}


def glb_name(run_id: str, number: int) -> str:
    """A version's GLB as downloaded: `<runId>.glb` (the reconstruction), `<runId>_v<n>.glb`."""
    return f"{run_id}.glb" if number == 1 else f"{run_id}_v{number}.glb"


def merged_settings(run: VGGTRun, changes: dict[str, Any]) -> VGGTSettings:
    """The run's newest version's settings with these changes (snake_case names); validated."""
    newest = run.version()
    base = newest.settings if newest is not None else run.settings
    return VGGTSettings.model_validate({**base.model_dump(), **changes})


class CliError(Exception):
    """A command that cannot be done, with the words to print and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CheckResult:
    """The backend check in plain words, and whether the backend could not be reached at all."""

    ok: bool
    summary: str
    details: list[str]

    @property
    def unreachable(self) -> bool:
        return not self.ok and reads_unreachable(self.summary)


@dataclass(frozen=True)
class Started:
    """A run recorded as waiting, and who will run it."""

    run: VGGTRun
    note: str
    foreground: bool


class Studio(abc.ABC):
    """The commands of one studio (a storage folder, or a server)."""

    where: str

    @abc.abstractmethod
    def submit(
        self, files: Sequence[tuple[str, bytes]], settings: VGGTSettings, presize: bool | None
    ) -> Started:
        """Create a run with these images and start it."""

    @abc.abstractmethod
    def submit_video(
        self, video: Path, settings: VGGTSettings, presize: bool | None, fps: float
    ) -> Started:
        """Create a run from a video's frames sampled at `fps` and start it."""

    @abc.abstractmethod
    def retry(self, run_id: str) -> Started:
        """Start a failed or cancelled run again."""

    @abc.abstractmethod
    def get(self, run_id: str) -> VGGTRun:
        """The run as stored now."""

    @abc.abstractmethod
    def list_runs(
        self, status: str | None, search: str | None, limit: int
    ) -> tuple[list[VGGTRun], int]:
        """A page of runs, newest first, and how many match."""

    @abc.abstractmethod
    def cancel(self, run_id: str) -> VGGTRun:
        """Cancel a waiting or running run."""

    @abc.abstractmethod
    def delete(self, run_id: str, force: bool) -> None:
        """Delete a run and its files."""

    @abc.abstractmethod
    def download(self, run_id: str, out: Path, version: int | None = None) -> list[Path]:
        """Copy the run's files into `out` (the newest version's GLB and the predictions), or
        only version `version`'s GLB; the paths written."""

    @abc.abstractmethod
    def rerender(self, run_id: str, changes: dict[str, Any], frame: int | None) -> RunVersion:
        """Queue a re-render: the newest version's settings with these changes (snake_case)."""

    @abc.abstractmethod
    def cancel_render(self, run_id: str) -> VGGTRun:
        """Cancel the run's waiting or running re-render."""

    @abc.abstractmethod
    def rerun(self, run_id: str, changes: dict[str, Any]) -> Started:
        """Start a new run of this run's images with changed settings, linked to it."""

    @property
    def renders_here(self) -> bool:
        """Whether a re-render runs in this process (so the command must wait for it)."""
        return False

    def versions(self, run_id: str) -> list[RunVersion]:
        """The run's versions, oldest first."""
        return self.get(run_id).all_versions

    def wait_render(
        self,
        run_id: str,
        number: int,
        on_update: Callable[[RunVersion], None],
        timeout: float | None = None,
    ) -> RunVersion:
        """Poll a version until it is rendered or ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            version = self.get(run_id).version(number)
            if version is None:
                raise CliError(f"Run {run_id} has no version {number}.")
            on_update(version)
            if not version.is_active:
                return version
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"Version {number} of run {run_id} is still {version.status.value} "
                    f"after {timeout:g} s."
                )
            time.sleep(POLL_S)

    @abc.abstractmethod
    def check(self) -> CheckResult:
        """Whether the backend serves the VGGT API."""

    def follow(self, run_id: str) -> Started | None:
        """Make sure someone runs this run if it is waiting; who does, or None if not waiting."""
        return None

    def close(self) -> None:  # noqa: B027  (nothing to release by default)
        """Release what the studio holds (a foreground run is cancelled by the caller first)."""

    def wait(
        self, run_id: str, on_update: Callable[[VGGTRun], None], timeout: float | None = None
    ) -> VGGTRun:
        """Poll the run until it is neither waiting nor running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            on_update(run)
            if not run.is_active:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(f"Run {run_id} is still {run.status.value} after {timeout:g} s.")
            time.sleep(POLL_S)


def _core_error(exc: VGGTError) -> CliError:
    return CliError(str(exc), EXIT_UNREACHABLE if reads_unreachable(str(exc)) else EXIT_FAILED)


class LocalStudio(Studio):
    """The storage folder of this machine, as the app and the workers on it see it."""

    def __init__(self, config: StudioConfig) -> None:
        self.config = config
        self.where = str(Path(config.storage_dir).resolve())
        self._service: StudioService | None = None
        self._foreground: StudioService | None = None

    @property
    def service(self) -> StudioService:
        """A service without workers: commands only; runs are run by whoever runs the storage."""
        if self._service is None:
            self._service = StudioService(self.config, workers=False)
        return self._service

    def _runner(self) -> tuple[StudioService, str, bool]:
        """Who runs a run this command records as waiting: a live app/worker, or this process."""
        live = live_workers(self.service.storage_root)
        if live:
            pids = ", ".join(str(w.pid) for w in live[:3])
            note = f"An app or worker on this storage (pid {pids}) picks it up within about 10 s."
            return self.service, note, False
        if self._foreground is None:
            # Workers but no sweep: this process runs only the runs it is handed.
            self._foreground = StudioService(self.config, sweep_interval_s=None)
        note = "No app or worker runs this storage: running it here (Ctrl-C cancels it)."
        return self._foreground, note, True

    def submit(
        self, files: Sequence[tuple[str, bytes]], settings: VGGTSettings, presize: bool | None
    ) -> Started:
        service, note, foreground = self._runner()
        try:
            run = service.submit(
                settings, files, presize=self.config.presize if presize is None else presize
            )
        except VGGTError as exc:
            raise _core_error(exc) from None
        return Started(run, note, foreground)

    def submit_video(
        self, video: Path, settings: VGGTSettings, presize: bool | None, fps: float
    ) -> Started:
        service, note, foreground = self._runner()
        try:
            run = service.submit_video(
                settings,
                video.name,
                video,
                fps=fps,
                presize=self.config.presize if presize is None else presize,
            )
        except VGGTError as exc:
            raise _core_error(exc) from None
        return Started(run, note, foreground)

    def retry(self, run_id: str) -> Started:
        service, note, foreground = self._runner()
        try:
            return Started(service.retry(run_id), note, foreground)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def follow(self, run_id: str) -> Started | None:
        run = self.get(run_id)
        if not (run.status is RunStatus.queued and run.submitted_at is not None):
            return None
        service, note, foreground = self._runner()
        if foreground:
            service.take(run_id)
        return Started(run, note, foreground)

    def get(self, run_id: str) -> VGGTRun:
        try:
            return self.service.get(run_id)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def list_runs(
        self, status: str | None, search: str | None, limit: int
    ) -> tuple[list[VGGTRun], int]:
        try:
            page = self.service.list_runs(status, search, limit=limit)
        except VGGTError as exc:
            raise _core_error(exc) from None
        return page.runs, page.total

    def cancel(self, run_id: str) -> VGGTRun:
        try:
            return self.service.cancel(run_id)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def delete(self, run_id: str, force: bool) -> None:
        try:
            self.service.delete(run_id, force=force)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def download(self, run_id: str, out: Path, version: int | None = None) -> list[Path]:
        run = self.get(run_id)
        chosen = run.version(version)
        sources: list[tuple[Path, str]] = []
        if chosen is not None and chosen.status is RenderStatus.completed:
            path = self.service.store.version_file(run_id, chosen.glb)
            if path is not None:
                sources.append((path, glb_name(run_id, chosen.number)))
        elif version is None and (path := self.service.artifact(run_id, "glb")) is not None:
            sources.append((path, glb_name(run_id, 1)))
        predictions = self.service.artifact(run_id, "predictions")
        if version is None and predictions is not None:
            sources.append((predictions, f"{run_id}{SUFFIXES['predictions']}"))
        written = []
        for path, name in sources:
            out.mkdir(parents=True, exist_ok=True)
            target = out / name
            shutil.copyfile(path, target)
            written.append(target)
        return written

    @property
    def renders_here(self) -> bool:
        return True

    def rerender(self, run_id: str, changes: dict[str, Any], frame: int | None) -> RunVersion:
        try:
            settings = merged_settings(self.get(run_id), changes)
            return self.service.rerender(run_id, settings, frame=frame)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def cancel_render(self, run_id: str) -> VGGTRun:
        try:
            return self.service.cancel_render(run_id)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def rerun(self, run_id: str, changes: dict[str, Any]) -> Started:
        service, note, foreground = self._runner()
        try:
            settings = merged_settings(self.get(run_id), changes)
            return Started(service.rerun(run_id, settings), note, foreground)
        except VGGTError as exc:
            raise _core_error(exc) from None

    def check(self) -> CheckResult:
        report = self.service.check()
        return CheckResult(report.ok, report.summary, list(report.details))

    def close(self) -> None:
        if self._foreground is not None:
            self._foreground.close()
        if self._service is not None:
            self._service.close()


class RemoteStudio(Studio):
    """A studio's REST API (`--server URL`), the same verbs over HTTP."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0) -> None:
        self.where = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=f"{self.where}/api", headers=headers, timeout=timeout, follow_redirects=False
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(
                f"Cannot reach the studio at {self.where}: {exc or type(exc).__name__}.",
                EXIT_UNREACHABLE,
            ) from None
        if response.status_code >= 400:
            raise CliError(_error_text(response))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise CliError(f"The studio at {self.where} answered something not JSON.") from None

    def _run(self, data: Any) -> VGGTRun:
        try:
            return VGGTRun.model_validate(data)
        except ValidationError:
            raise CliError(f"The studio at {self.where} answered an unexpected run.") from None

    def submit(
        self, files: Sequence[tuple[str, bytes]], settings: VGGTSettings, presize: bool | None
    ) -> Started:
        body: dict[str, Any] = {"settings": settings.to_json_dict()}
        if presize is not None:
            body["presize"] = presize
        run_id = self._json("POST", "/runs", json=body)["runId"]
        try:
            self._request(
                "POST",
                f"/runs/{run_id}/images",
                files=[("images", (name, data)) for name, data in files],
            )
            self._request("POST", f"/runs/{run_id}/process")
        except CliError:
            # An empty run is no use to anyone (as the local submit leaves nothing either).
            with contextlib.suppress(CliError):
                self._request("DELETE", f"/runs/{run_id}", params={"force": "true"})
            raise
        return Started(self.get(run_id), f"The studio at {self.where} runs it.", False)

    def submit_video(
        self, video: Path, settings: VGGTSettings, presize: bool | None, fps: float
    ) -> Started:
        form = {"settings": json.dumps(settings.to_json_dict()), "fps": str(fps)}
        if presize is not None:
            form["presize"] = "true" if presize else "false"
        try:
            handle = video.open("rb")
        except OSError as exc:
            raise CliError(f"Cannot read {video}: {exc.strerror}.", EXIT_USAGE) from None
        with handle:
            data = self._json("POST", "/videos", data=form, files=[("video", (video.name, handle))])
        return Started(self.get(data["runId"]), f"The studio at {self.where} runs it.", False)

    def retry(self, run_id: str) -> Started:
        self._request("POST", f"/runs/{run_id}/retry")
        return Started(self.get(run_id), f"The studio at {self.where} runs it.", False)

    def get(self, run_id: str) -> VGGTRun:
        return self._run(self._json("GET", f"/runs/{run_id}"))

    def list_runs(
        self, status: str | None, search: str | None, limit: int
    ) -> tuple[list[VGGTRun], int]:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if search:
            params["q"] = search
        data = self._json("GET", "/runs", params=params)
        return [self._run(item) for item in data.get("runs", [])], int(data.get("total", 0))

    def cancel(self, run_id: str) -> VGGTRun:
        return self._run(self._json("POST", f"/runs/{run_id}/cancel"))

    def delete(self, run_id: str, force: bool) -> None:
        self._request("DELETE", f"/runs/{run_id}", params={"force": str(force).lower()})

    def download(self, run_id: str, out: Path, version: int | None = None) -> list[Path]:
        run = self.get(run_id)
        chosen = run.version(version)
        sources: list[tuple[str, str]] = []
        if chosen is not None and chosen.status is RenderStatus.completed:
            name = glb_name(run_id, chosen.number)
            sources.append((f"/runs/{run_id}/versions/{chosen.number}/glb", name))
        elif version is None and run.artifacts.glb is not None:
            sources.append((f"/runs/{run_id}/artifacts/glb", glb_name(run_id, 1)))
        if version is None and run.artifacts.predictions is not None:
            name = f"{run_id}{SUFFIXES['predictions']}"
            sources.append((f"/runs/{run_id}/artifacts/predictions", name))
        written = []
        for url, name in sources:
            out.mkdir(parents=True, exist_ok=True)
            written.append(self._fetch(url, out / name))
        return written

    def _fetch(self, url: str, target: Path) -> Path:
        partial = target.with_name(f".{target.name}.part")
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CliError(_error_text(response))
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
            partial.replace(target)
        except httpx.TransportError as exc:
            raise CliError(
                f"Downloading from {self.where} failed: {exc or type(exc).__name__}.",
                EXIT_UNREACHABLE,
            ) from None
        finally:
            partial.unlink(missing_ok=True)
        return target

    def rerender(self, run_id: str, changes: dict[str, Any], frame: int | None) -> RunVersion:
        # Only the changes: the server keeps the newest version's settings for the others.
        settings = VGGTSettings.model_validate(changes)
        body = {"settings": settings.model_dump(mode="json", by_alias=True, include=set(changes))}
        data = self._json("POST", f"/runs/{run_id}/rerender", json={**body, "frame": frame})
        try:
            return RunVersion.model_validate({**data, "glb": None})
        except ValidationError:
            raise CliError(f"The studio at {self.where} answered an unexpected version.") from None

    def cancel_render(self, run_id: str) -> VGGTRun:
        return self._run(self._json("POST", f"/runs/{run_id}/rerender/cancel"))

    def rerun(self, run_id: str, changes: dict[str, Any]) -> Started:
        settings = VGGTSettings.model_validate(changes)
        body = {"settings": settings.model_dump(mode="json", by_alias=True, include=set(changes))}
        new_id = self._json("POST", f"/runs/{run_id}/rerun", json=body)["runId"]
        return Started(self.get(new_id), f"The studio at {self.where} runs it.", False)

    def check(self) -> CheckResult:
        data = self._json("GET", "/health", params={"check": "true"})
        check = data.get("check") or {}
        return CheckResult(
            bool(check.get("ok")), str(check.get("summary", "")), list(check.get("details", []))
        )

    def close(self) -> None:
        self._http.close()


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    error = data.get("error", f"HTTP {response.status_code}") if isinstance(data, dict) else ""
    details = data.get("details") if isinstance(data, dict) else None
    if isinstance(details, list):
        details = " ".join(
            f"{d.get('file')}: {d.get('reason')}." if isinstance(d, dict) else str(d)
            for d in details
        )
    return f"{error}: {details}" if details else str(error)
