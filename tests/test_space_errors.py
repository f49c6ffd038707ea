"""Every exception gradio_client or httpx may raise becomes one plain, actionable message."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.server
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from gradio_client.exceptions import AppError
from gradio_client.utils import ProgressUnit, QueueError, Status, StatusUpdate

from vggt_core import VGGTSpace
from vggt_core.errors import bounded_text as clip_text
from vggt_core.errors import explain_error
from vggt_core.space import _progress_of

BACKEND = "http://127.0.0.1:7860"


@pytest.mark.parametrize(
    ("exc", "kind", "start"),
    [
        (httpx.ConnectError("refused"), "unreachable", "Cannot reach the backend"),
        (httpx.ReadTimeout("slow"), "timeout", f"The backend {BACKEND} stopped answering"),
        # a server killed mid-run: each way it can surface
        (concurrent.futures.CancelledError(), "connection_lost", "The connection to the backend"),
        (httpx.ReadError("Connection reset by peer"), "connection_lost", "The connection"),
        (httpx.RemoteProtocolError("incomplete chunked read"), "connection_lost", "The connection"),
        (QueueError("Queue is full! Please try again."), "queue_full", "The Space's queue is full"),
        (AppError("CUDA out of memory"), "app_error", "The Space reported an error: CUDA out"),
        (
            ValueError("The current space is in the invalid state: PAUSED. Please contact"),
            "space_state",
            "The Space http://127.0.0.1:7860 is not running (PAUSED)",
        ),
        (RuntimeError("boom"), "unexpected", "Unexpected error talking to the backend"),
    ],
)
def test_each_failure_gets_its_own_plain_message(exc, kind, start):
    error = explain_error(exc, backend=BACKEND, has_token=False)
    assert error.kind == kind
    assert str(error).startswith(start)
    assert "Traceback" not in str(error)


def test_quota_text_gives_the_wait_and_what_a_token_changes():
    text = "You have exceeded your GPU quota (60s requested vs. 0s left). Try again in 0:09:48"
    anonymous = explain_error(AppError(text), backend="facebook/vggt", has_token=False)
    with_token = explain_error(AppError(text), backend="facebook/vggt", has_token=True)
    assert str(anonymous) == (
        "The Space's GPU quota for anonymous users is used up; add an HF token or retry in "
        "10 minutes."
    )
    assert (
        str(with_token) == "The Space's GPU quota for your account is used up; retry in 10 minutes."
    )
    assert anonymous.retry_after_s == 588


# --- real failures a user meets offline or behind a network that says no ----------------------


def test_an_unresolvable_name_says_so_in_plain_words():
    report = VGGTSpace("http://no-such-host.invalid:7860", connect_timeout_s=10).check()
    assert not report.ok
    assert report.summary.startswith("Cannot find the backend http://no-such-host.invalid:7860")
    assert "does not resolve" in report.summary
    assert "Errno" not in report.summary and "ConnectError" not in report.summary


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler], tls_dir: Path | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls_dir is not None:
        key, cert = tls_dir / "key.pem", tls_dir / "cert.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Refusing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(403, "Forbidden by proxy")

    def do_CONNECT(self) -> None:
        self.send_error(403, "Forbidden by proxy")

    def log_message(self, *args) -> None:
        pass


def test_an_untrusted_certificate_says_the_secure_connection_failed(tmp_path):
    with serving(Refusing, tls_dir=tmp_path) as port:
        report = VGGTSpace(f"https://127.0.0.1:{port}", connect_timeout_s=10).check()
    assert not report.ok
    assert report.summary.startswith(
        f"The secure connection to the backend https://127.0.0.1:{port}"
    )
    assert "SSL" not in report.summary and "Errno" not in report.summary


def test_a_proxy_that_refuses_is_named(monkeypatch):
    with serving(Refusing) as port:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        report = VGGTSpace("https://vggt.example.org", connect_timeout_s=10).check()
    assert not report.ok
    assert report.summary.startswith("A proxy refused the connection to the backend")


# --- backend text is kept bounded ----------------------------------------------------------------

HUGE = "x" * 5_000_000


@pytest.mark.parametrize(
    ("exc", "start"),
    [
        (AppError(HUGE), "The Space reported an error: xxx"),
        (OSError(HUGE), "Talking to the backend http://127.0.0.1:7860 failed: OSError: xxx"),
        (RuntimeError(HUGE), "Unexpected error talking to the backend: RuntimeError: xxx"),
        (ValueError(f"The space is in the invalid state: {HUGE}"), "The Space http://127.0.0.1"),
    ],
)
def test_a_huge_backend_message_is_kept_to_a_few_kb(exc, start):
    message = str(explain_error(exc, backend=BACKEND, has_token=False))
    assert message.startswith(start)
    assert len(message) < 2_500
    assert "more characters)" in message


def test_a_bounded_message_says_how_much_was_left_out():
    assert clip_text("abc") == "abc"
    assert clip_text("a" * 2_000) == "a" * 2_000
    assert clip_text("a" * 5_000) == "a" * 2_000 + "… (3,000 more characters)"


def test_huge_progress_and_log_messages_are_kept_to_a_few_kb():
    def update(**kwargs):
        base = {"rank": None, "queue_size": None, "eta": None, "success": None, "time": None}
        return StatusUpdate(**{**base, "progress_data": None, **kwargs})

    progress = update(
        code=Status.PROGRESS,
        progress_data=[ProgressUnit(index=1, length=2, unit="steps", progress=None, desc=HUGE)],
    )
    log = update(code=Status.LOG, log=(HUGE, "info"))
    for report in (_progress_of(progress), _progress_of(log)):
        assert report is not None and report.message is not None
        assert report.message.startswith("xxx") and len(report.message) < 2_500
