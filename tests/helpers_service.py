"""Test helpers for the core service: a service on a folder and a backend, waiting for a state."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from vggt_core import StudioService, load_config

T = TypeVar("T")


def service_on(root: Path, backend: str, **config: object) -> StudioService:
    """A service with workers on `root` talking to `backend`; its sweep runs often."""
    settings = load_config({"VGGT_BACKEND": backend, "VGGT_STORAGE_DIR": str(root), **config})
    return StudioService(settings, sweep_interval_s=0.3)


@contextlib.contextmanager
def running(service: StudioService) -> Iterator[StudioService]:
    """Close the service (and its workers) when the block ends."""
    try:
        yield service
    finally:
        service.close()


def wait_for(condition: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll until `condition()` is truthy (generous deadline, never a fixed wait); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
