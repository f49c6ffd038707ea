"""Every error the core raises on purpose, and the table that turns backend failures into words.

VGGTError                 anything the core refuses or fails at, with a message for people
├── ConfigError           a setting out of range; names the variable
├── StorageError          the store refused, or the disk failed ("the disk is full")
│   ├── InvalidRunId      not of the form run_<epoch ms>_<6 of a-z0-9>
│   ├── RunNotFound       no run with that id
│   ├── RunBusy           the run's state does not allow the command
│   ├── ImagesRejected    a batch of images refused as a whole; `problems` name each file
│   └── LockTimeout       a run's lock stayed taken past its bound
├── ImageRejected         one file refused, with its name and the reason (also a ValueError)
├── ExportError           cameras or an export cannot be made from this GLB (also a ValueError)
└── SpaceError            the backend failed; `kind` says how (see ErrorKind)
    └── SpaceCancelled    the user cancelled while the backend worked
"""

from __future__ import annotations

import concurrent.futures
import errno
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

__all__ = [
    "ConfigError",
    "ErrorKind",
    "ExportError",
    "ImageRejected",
    "ImagesRejected",
    "InvalidRunId",
    "LockTimeout",
    "RunBusy",
    "RunNotFound",
    "SpaceCancelled",
    "SpaceError",
    "StorageError",
    "VGGTError",
    "VideoRejected",
    "bounded_text",
    "explain_error",
    "public_backend",
    "reads_unreachable",
    "scrub",
    "storage_error",
]

# Backend text (errors, log lines) is kept at most this long: a 5 MB message must not become a
# 5 MB metadata.json shown on every page.
MAX_BACKEND_TEXT = 2000


class VGGTError(Exception):
    """Base of every error the core raises on purpose; its message is meant for people."""


class ConfigError(VGGTError):
    """A setting out of range; the message names the variable."""


class StorageError(VGGTError):
    """Any refusal of the store, or a disk failure, with a message a person can act on."""


class InvalidRunId(StorageError):
    """A run id that is not of the form `run_<epoch ms>_<6 of a-z0-9>`."""


class RunNotFound(StorageError):
    """No run with that id under the storage root."""


class RunBusy(StorageError):
    """The run's state does not allow the command (e.g. deleting an active run)."""


class LockTimeout(StorageError):
    """A run's lock was held by someone else for longer than the bound."""


def _display_name(name: str) -> str:
    shown = "".join(ch if ch.isprintable() else "?" for ch in name)
    return shown if len(shown) <= 80 else shown[:77] + "…"


class ImageRejected(VGGTError, ValueError):
    """An uploaded file that is not accepted as an image, with the file's name and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{_display_name(name)}: {reason}")


class ExportError(VGGTError, ValueError):
    """Cameras or an export cannot be made from the given GLB or predictions; says why."""


class ImagesRejected(StorageError):
    """A batch of images refused as a whole; `problems` names each bad file and why."""

    def __init__(self, problems: list[ImageRejected]) -> None:
        self.problems = problems
        super().__init__("No image was stored. " + " ".join(f"{p}." for p in problems))


class VideoRejected(ImagesRejected):
    """A video refused as a run's source (not decodable, empty, too long or big); no run made."""

    def __init__(self, name: str, reason: str) -> None:
        problem = ImageRejected(name, reason)
        self.problems = [problem]
        StorageError.__init__(self, f"No run was created. {problem}.")


ErrorKind = Literal[
    "unreachable",
    "hub_busy",
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


class SpaceError(VGGTError):
    """A backend failure as a message a person can act on; `kind` says which failure it was."""

    def __init__(
        self, message: str, *, kind: ErrorKind, retry_after_s: float | None = None
    ) -> None:
        super().__init__(bounded_text(scrub(message)))
        self.kind = kind
        self.retry_after_s = retry_after_s


class SpaceCancelled(SpaceError):
    """The run was cancelled by the user while the backend worked on it."""

    def __init__(self) -> None:
        super().__init__("Cancelled by the user.", kind="cancelled")


# --- secrets never leave in text ---------------------------------------------------------------

_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}")


def public_backend(backend: str) -> str:
    """The backend as it may be stored, logged or shown: no user, password, query or fragment."""
    backend = backend.strip()
    if "://" not in backend:
        return scrub(backend)
    parts = urlsplit(backend)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str) -> str:
    """`text` without URL credentials or anything shaped like an HF token."""
    return _HF_TOKEN.sub("hf_…", _USERINFO.sub("", text))


def bounded_text(text: str, limit: int = MAX_BACKEND_TEXT) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


# --- the disk ----------------------------------------------------------------------------------

_DISK_WORDS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file grew past what this disk or process allows",
    errno.EROFS: "the storage folder is read-only",
    errno.EACCES: "permission was denied",
    errno.EPERM: "the operation is not permitted",
    errno.EIO: "the disk reported an input/output error",
    errno.EMFILE: "too many files are open",
    errno.ENAMETOOLONG: "a file name is too long",
}


def storage_error(exc: OSError, doing: str) -> StorageError:
    """An OSError met while `doing` something, in plain words ("the disk is full")."""
    words = _DISK_WORDS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    return StorageError(f"Could not {doing}: {words}.")


# --- the backend-error table -------------------------------------------------------------------

_QUOTA = re.compile(r"exceeded your GPU quota.*?Try again in (\d+):(\d\d):(\d\d)", re.S | re.I)


@dataclass(frozen=True)
class _Context:
    backend: str
    has_token: bool
    text: str


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _quota(exc: BaseException, c: _Context) -> SpaceError | None:
    found = _QUOTA.search(c.text)
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    wait = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    who = "your account" if c.has_token else "anonymous users"
    fix = "retry" if c.has_token else "add an HF token or retry"
    return SpaceError(
        f"The Space's GPU quota for {who} is used up; {fix} in {_minutes(wait)}.",
        kind="quota",
        retry_after_s=wait,
    )


def _no_gpu(exc: BaseException, c: _Context) -> SpaceError | None:
    if "no gpu was available" not in c.text.lower():
        return None
    return SpaceError(
        "No GPU was free on the Space (its GPU queue timed out); retry in a minute"
        + ("." if c.has_token else ", or add an HF token for a higher priority."),
        kind="no_gpu",
    )


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _hub(exc: BaseException, c: _Context) -> SpaceError | None:
    from_hub = type(exc).__name__ in {"RepositoryNotFoundError", "HfHubHTTPError", "GatedRepoError"}
    if not from_hub and not (isinstance(exc, ValueError) and "Could not find Space" in c.text):
        return None
    code = _status_code(exc)
    if code == 429:
        return SpaceError(
            "The Hugging Face Hub is rate-limiting requests (HTTP 429); retry in a few minutes.",
            kind="hub_busy",
        )
    if code is not None and code >= 500:
        return SpaceError(
            f"The Hugging Face Hub is busy or down (HTTP {code}); retry in a few minutes.",
            kind="hub_busy",
        )
    hint = "" if c.has_token else " (a private Space needs an HF token)"
    return SpaceError(f"No Space named {c.backend} was found{hint}.", kind="unreachable")


def _space_state(exc: BaseException, c: _Context) -> SpaceError | None:
    if "invalid state" not in c.text:
        return None
    state = c.text.split("invalid state:", 1)[-1].split(".")[0].strip()
    return SpaceError(
        f"The Space {c.backend} is not running ({state}); ask its owner or use another backend.",
        kind="space_state",
    )


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 10:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _connect(exc: BaseException, c: _Context) -> SpaceError | None:
    chain = _cause_chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    if isinstance(exc, httpx.ProxyError) or ("proxy" in text and "refus" in text):
        return SpaceError(
            f"A proxy refused the connection to the backend {c.backend}: check the proxy "
            "settings (HTTPS_PROXY, NO_PROXY).",
            kind="unreachable",
        )
    if any(isinstance(e, ssl.SSLError) for e in chain) or "certificate" in text or "ssl" in text:
        return SpaceError(
            f"The secure connection to the backend {c.backend} failed (its TLS certificate "
            "could not be verified or the handshake broke); check the address, the clock and "
            "any proxy.",
            kind="unreachable",
        )
    if (
        "name or service not known" in text
        or "nodename nor servname" in text
        or ("temporary failure in name resolution" in text or "getaddrinfo" in text)
    ):
        return SpaceError(
            f"Cannot find the backend {c.backend}: its name does not resolve. Check the address "
            "and that this machine is online (offline, use a local backend such as make demo's).",
            kind="unreachable",
        )
    if not isinstance(exc, httpx.HTTPError):
        return None  # some other OSError: said as it is by a later rule
    return SpaceError(
        f"Cannot reach the backend {c.backend}: check the address and that it is running.",
        kind="unreachable",
    )


def _talking(exc: BaseException, c: _Context) -> SpaceError:
    return SpaceError(
        f"Talking to the backend {c.backend} failed: {type(exc).__name__}: {c.text}",
        kind="unreachable",
    )


def _fixed(kind: ErrorKind, message: str) -> Callable[[BaseException, _Context], SpaceError]:
    return lambda exc, c: SpaceError(message.format(backend=c.backend, text=c.text), kind=kind)


_Rule = tuple[
    type[BaseException] | tuple[type[BaseException], ...],
    Callable[[BaseException, _Context], SpaceError | None],
]

# First rule whose type matches and whose handler answers wins; order matters.
_TABLE: list[_Rule] = [
    (SpaceError, lambda exc, c: exc if isinstance(exc, SpaceError) else None),
    (AppError, _quota),
    (AppError, _no_gpu),
    (AppError, _fixed("app_error", "The Space reported an error: {text}")),
    (QueueError, _fixed("queue_full", "The Space's queue is full; retry in a few minutes.")),
    ((httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError), _connect),
    (
        (httpx.TimeoutException, TimeoutError, concurrent.futures.TimeoutError),
        _fixed("timeout", "The backend {backend} stopped answering (timed out); retry later."),
    ),
    # A server killed mid-run shows as a cancelled job, a broken stream or a reset connection.
    (
        (concurrent.futures.CancelledError, httpx.RemoteProtocolError, httpx.NetworkError),
        _fixed(
            "connection_lost",
            "The connection to the backend was lost during the run (it stopped or restarted); "
            "retry.",
        ),
    ),
    (ValueError, _space_state),
    (Exception, _hub),
    (ssl.SSLError, _connect),
    (OSError, _connect),
    ((httpx.HTTPError, OSError), _talking),
]


def explain_error(exc: BaseException, *, backend: str, has_token: bool) -> SpaceError:
    """Turn whatever gradio_client, httpx or the Hub raised into a SpaceError to act on."""
    context = _Context(public_backend(backend), has_token, scrub(str(exc)) or "no details given")
    for types, handler in _TABLE:
        if isinstance(exc, types):
            error = handler(exc, context)
            if error is not None:
                return error
    return SpaceError(
        f"Unexpected error talking to the backend: {type(exc).__name__}: {context.text}",
        kind="unexpected",
    )


# The openings of the messages above whose kind is `unreachable` or `hub_busy`: a run keeps only
# its error's words, and the command line reads them back to exit with "backend unreachable".
# tests/test_cli.py builds each such error through explain_error and checks it is recognised.
_UNREACHABLE_OPENINGS = (
    "A proxy refused the connection to the backend",
    "The secure connection to the backend",
    "Cannot find the backend",
    "Cannot reach the backend",
    "No Space named",
    "Talking to the backend",
    "The Hugging Face Hub is",
)


def reads_unreachable(text: str | None) -> bool:
    """True when a stored error (a run's, a check's) says the backend could not be reached."""
    return bool(text) and str(text).startswith(_UNREACHABLE_OPENINGS)
