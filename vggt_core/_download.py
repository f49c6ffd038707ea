"""Downloading the backend's files: credentials to its own origin only, every byte judged
before it is written, one deadline for the whole download, and Cancel honoured at once."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx

from ._atomic import commit_file, temp_sibling
from ._net import Watchdog, http_url, sends_credentials, tls_context
from .errors import SpaceCancelled, SpaceError, bounded_text, storage_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from .space import FileRef, SpaceSession

__all__ = ["download", "glb_size_cap", "predictions_size_cap"]

_MAX_DOWNLOAD_BYTES = 4 * 1024**3
# VGGT's input frames are at most 518×518: one point, one depth, one colour per pixel.
FRAME_PIXELS = 518 * 518
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GLB_MAGIC = b"glTF"
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive: it starts with a local file header
_NOT_A_GLB = "The backend's download is not a GLB 3D model (wrong file type)."


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


def download(
    session: SpaceSession,
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
    watch = Watchdog(
        time.monotonic() + session.space.download_timeout_s,
        should_cancel,
        session.space.poll_interval_s,
    )
    try:
        with (
            watch,
            httpx.Client(
                timeout=session.space._timeout(), verify=tls_context(), follow_redirects=False
            ) as http,
        ):
            response = _get_following_redirects(session, http, ref.url, label, watch)
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
                        _stop_if_ended(session, watch, label)
                        intake.take(chunk)  # before writing: garbage is never written
                        out.write(chunk)
            finally:
                response.close()
            # A shut socket can look like the end of a body without a length.
            _stop_if_ended(session, watch, label)
        _check_file(tmp, kind)
        commit_file(tmp, dest)
        return intake.size
    except SpaceError:
        raise
    except Exception as exc:
        if watch.reason is not None:  # the watchdog shut the socket: that is the cause
            _stop_if_ended(session, watch, label)
        if isinstance(exc, OSError) and not isinstance(exc, httpx.HTTPError):
            # httpx wraps network errors: a raw OSError is our own disk's.
            raise storage_error(exc, f"save the {label}") from exc
        raise session.space._explain(exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _stop_if_ended(session: SpaceSession, watch: Watchdog, label: str) -> None:
    reason = watch.check()
    if reason == "cancelled":
        raise SpaceCancelled
    if reason == "timeout":
        raise SpaceError(
            f"Downloading the {label} took longer than "
            f"{session.space.download_timeout_s:.0f} s; retry later.",
            kind="timeout",
        )


def _get_following_redirects(
    session: SpaceSession, http: httpx.Client, url: str, label: str, watch: Watchdog
) -> httpx.Response:
    """The streamed response at the end of `url`'s redirects (the caller closes it)."""
    base = httpx.URL(session.client.src)
    for _hop in range(_MAX_REDIRECTS + 1):
        target = http_url(base, url)
        if target is None:
            raise SpaceError(
                f"Downloading the {label} failed: the backend pointed to "
                f"{bounded_text(url, 200)}, not an http(s) address.",
                kind="bad_download",
            )
        http.cookies.clear()  # cookies a hop set are not carried to the next
        request = http.build_request(
            "GET",
            target,
            headers=_headers_for(session, str(target)),
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


def _headers_for(session: SpaceSession, url: str) -> dict[str, str]:
    """The client's headers and cookies for the backend's own origin; else none of them."""
    if not sends_credentials(url, session.client.src):
        agent = session.client.headers.get("user-agent")
        return {"user-agent": agent} if agent else {}
    headers = dict(session.client.headers)
    if session.client.cookies:
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in session.client.cookies.items())
    return headers


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
