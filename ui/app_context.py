"""The app's configuration, its one process-wide service, and the entry-point guard."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
from pydantic import ValidationError

from vggt_core import StorageError, StudioConfig, StudioService, describe_config_error, load_config

from .common import md_escape

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


def _settings_key(settings: StudioConfig) -> str:
    # The token only enters as part of a digest: the key itself never holds a secret.
    raw = settings.model_dump_json() + "\0" + (settings.token or "")
    return hashlib.sha256(raw.encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def _services() -> dict[str, tuple[str, StudioService]]:
    return {}


_services_lock = threading.Lock()


def _service_for(settings: StudioConfig) -> StudioService:
    """One service per storage folder and process; new settings replace it gracefully."""
    root = str(Path(settings.storage_dir).resolve())
    key = _settings_key(settings)
    with _services_lock:
        services = _services()
        current = services.get(root)
        if current is not None and current[0] == key:
            return current[1]
        service = StudioService(settings)
        if current is not None:
            # Its running runs finish; its waiting ones are taken over through the disk.
            current[1].close(interrupt=False)
        services[root] = (key, service)
    service.recover()
    return service


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
