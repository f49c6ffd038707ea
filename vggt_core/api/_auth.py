"""Who the REST API answers: a bearer token when one is set, else this machine only.

With VGGT_API_TOKEN set, every call needs `Authorization: Bearer <token>` (compared in constant
time). Without it, the API answers only a client on a loopback address that reached it by a
loopback host name, directly and not relayed by a proxy, and not from a page of another site: a
web page in the same machine's browser can neither send it commands (cross-site requests and DNS
rebinding are refused) nor read its answers.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

__all__ = ["Refusal", "check_access"]

# Headers a proxy adds: a request relayed by one is not a loopback client, whatever its address.
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
ADVICE = (
    "Set VGGT_API_TOKEN on the server to use the API from another machine, and send it as "
    "'Authorization: Bearer <token>'."
)


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: its status, title and details."""

    status: int
    error: str
    details: str


def _is_loopback_address(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _is_loopback_host(host_header: str) -> bool:
    """True when the Host header names this machine (`localhost`, 127.x, ::1), any port."""
    host = urlsplit(f"//{host_header}").hostname or ""
    return host.lower() in _LOOPBACK_NAMES or _is_loopback_address(host)


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def check_access(scope: Scope, token: str | None) -> Refusal | None:
    """None when the request may go on; else why it is refused."""
    headers = Headers(scope=scope)
    if token is not None:
        given = _bearer(headers)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            return Refusal(
                401,
                "Unauthorized",
                "This API needs 'Authorization: Bearer <token>' with the server's VGGT_API_TOKEN.",
            )
        return None
    client = scope.get("client")
    host = client[0] if client else None
    if not _is_loopback_address(host) or any(h in headers for h in _PROXY_HEADERS):
        return Refusal(
            403,
            "Forbidden",
            "Without VGGT_API_TOKEN the API answers only this machine. " + ADVICE,
        )
    if not _is_loopback_host(headers.get("host", "")):
        return Refusal(
            403,
            "Forbidden",
            "Without VGGT_API_TOKEN the API answers only requests addressed to localhost, "
            "127.0.0.1 or [::1]. " + ADVICE,
        )
    origin = headers.get("origin")
    site = headers.get("sec-fetch-site", "")
    cross_origin = origin is not None and (
        origin == "null" or not _is_loopback_host(urlsplit(origin).netloc)
    )
    if cross_origin or site == "cross-site":
        return Refusal(
            403,
            "Forbidden",
            "Requests from web pages of other sites are refused. " + ADVICE,
        )
    return None
