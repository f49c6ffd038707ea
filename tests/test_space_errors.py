"""Every exception gradio_client or httpx may raise becomes one plain, actionable message."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

from vggt_core.errors import explain_error

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
