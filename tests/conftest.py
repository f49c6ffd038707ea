"""Shared fixtures: the local stand-in for the Space (in-process and as child processes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gradio_client import Client

    from vggt_core.local_space import LocalSpace, LocalSpaceProcess, StandInOptions

# vggt_core.local_space and gradio_client are imported inside the fixtures: importing gradio
# costs about 2 s, which tests that never start a server should not pay.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# No telemetry thread of huggingface_hub's (it would also count as a leaked thread in the tests).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


@pytest.fixture(scope="session")
def local_space() -> Iterator[LocalSpace]:
    """One in-process stand-in for the session; a test that changes its options restores them
    (use `local_space.override(...)`)."""
    from vggt_core.local_space import LocalSpace, StandInOptions

    with LocalSpace(StandInOptions()) as space:
        yield space


@pytest.fixture
def spawn_space(tmp_path: Path) -> Iterator[Callable[..., LocalSpaceProcess]]:
    """A factory of child-process stand-ins (for kill/freeze tests); all stopped afterwards."""
    from vggt_core.local_space import spawn_local_space

    handles: list[LocalSpaceProcess] = []

    def spawn(options: StandInOptions | None = None, **kwargs: Any) -> LocalSpaceProcess:
        kwargs.setdefault("workdir", tmp_path / f"space_{len(handles)}")
        handle = spawn_local_space(options, **kwargs)
        handles.append(handle)
        return handle

    yield spawn
    for handle in handles:
        handle.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[[str], Client]]:
    """A factory of gradio Clients for a URL (no token, no downloads); closed afterwards."""
    from gradio_client import Client

    clients: list[Client] = []

    def make(url: str) -> Client:
        client = Client(url, token=False, download_files=False, verbose=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sample_image_paths(tmp_path: Path) -> list[Path]:
    """Three small textured PNGs (160×120) with a sky band and black/white patches."""
    from vggt_core.local_space import write_sample_images

    return write_sample_images(tmp_path / "upload", count=3, size=(160, 120))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    """Three small textured photos of one scene as (name, bytes), the way the app receives them."""
    from vggt_core.local_space import write_sample_images

    folder = tmp_path_factory.mktemp("images")
    return [(p.name, p.read_bytes()) for p in write_sample_images(folder, count=3)]
