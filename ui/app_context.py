"""The app's configuration, its one process-wide service, and the entry-point guard."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from vggt_core import (
    ConfigError,
    StorageError,
    StudioConfig,
    StudioService,
    VGGTError,
    describe_config_error,
    load_config,
)
from vggt_core.shared import process_services

from .common import md_escape

log = logging.getLogger(__name__)

# --- configuration and the shared service -------------------------------------------------


@dataclass(frozen=True)
class AppContext:
    """The settings of this run of the script and the process-wide service."""

    settings: StudioConfig
    service: StudioService


def secrets_overrides() -> dict[str, Any]:
    """Top-level values of Streamlit secrets; empty when there is no (readable) secrets.toml."""
    try:
        return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, Mapping)}
    except Exception:  # st.secrets raises when no secrets.toml exists: that is the normal case
        return {}


def _service_for(settings: StudioConfig) -> StudioService:
    """One service per storage folder and process, shared with the REST API of this process;
    new settings replace it gracefully."""
    return process_services().get(settings)


def shared_service() -> StudioService:
    """The service the pages of this process use, for the REST API served beside them.

    Called from the API's threads: it reads the configuration as the pages do (secrets over
    environment over defaults) and makes no Streamlit call that needs a script run.
    """
    try:
        settings = load_config(secrets_overrides())
    except ValidationError as exc:
        raise ConfigError(f"The configuration is not valid: {describe_config_error(exc)}") from None
    return _service_for(settings)


@contextlib.asynccontextmanager
async def serve_lifespan(_app: object) -> AsyncIterator[None]:
    """The server's life: the service starts with it (waiting runs resume before any visit) and
    closes with it (running runs end interrupted at once, waiting runs stay queued)."""
    try:
        await run_in_threadpool(shared_service)
    except VGGTError as exc:  # the pages show it to the first visitor
        log.warning("the service could not start: %s", exc)
    try:
        yield
    finally:
        await run_in_threadpool(process_services().close)


def context() -> AppContext:
    """The configuration (secrets over environment over defaults) and the process-wide service."""
    try:
        settings = load_config(secrets_overrides())
    except ValidationError as exc:
        st.error(
            md_escape(f"The configuration is not valid: {describe_config_error(exc)}"),
            icon=":material/settings:",
        )
        st.stop()
    try:
        service = _service_for(settings)
    except StorageError as exc:
        st.error(md_escape(f"The storage folder {settings.storage_dir} cannot be used: {exc}"))
        st.stop()
    return AppContext(settings, service)


@st.cache_data(ttl=10, show_spinner=False)
def _disk_usage(root: str, counts: tuple[tuple[str, int], ...], _service: StudioService) -> int:
    return _service.disk_usage()


def disk_usage(service: StudioService) -> int:
    """Bytes the runs use, re-counted at most every 10 s (walking every file is not free),
    and at once when a run is added, deleted or changes status (e.g. its model arrived)."""
    return _disk_usage(str(service.storage_root), tuple(sorted(service.counts().items())), service)
