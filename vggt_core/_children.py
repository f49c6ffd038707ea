"""Stopping a child server started in its own process group, and whatever it left there."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

__all__ = ["stop_group"]


def stop_group(
    process: subprocess.Popen[bytes],
    timeout: float,
    *,
    sig: int = signal.SIGTERM,
    resume: bool = False,
) -> int | None:
    """Send `sig` to the group (and SIGCONT with `resume`, for a stopped child), SIGKILL it if
    it lingers past `timeout`, reap the leader; its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
            if resume:
                os.killpg(process.pid, signal.SIGCONT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the child left in its group
    return process.returncode
