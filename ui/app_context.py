"""The app's configuration and process-wide objects: settings, store, executor, entry point."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import streamlit as st
from pydantic import ValidationError

from vggt_core import (
    RunExecutor,
    RunStore,
    Settings,
    load_settings,
)

from .common import md_escape

# --- entry point ----------------------------------------------------------------------------


def require_entrypoint() -> None:
    """Rerun through app.py when Streamlit ran this page on its own (its pages/ folder mode).

    With a `pages/` folder beside app.py, Streamlit runs the requested page file directly
    until st.navigation has been called once in the process (e.g. when a fresh server's
    first visitor opens /history): that page would lack app.py's page config and sidebar.
    """
    from streamlit.runtime.pages_manager import PagesManager  # no public switch exists

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation in app.py sets
        st.rerun()


# --- configuration and the shared objects --------------------------------------------------


@dataclass(frozen=True)
class AppContext:
    """The settings of this run of the script and the process-wide store and executor."""

    settings: Settings
    store: RunStore
    executor: RunExecutor


def secrets_overrides() -> dict[str, Any]:
    """Top-level values of Streamlit secrets; empty when there is no (readable) secrets.toml."""
    try:
        return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, Mapping)}
    except Exception:  # st.secrets raises when no secrets.toml exists: that is the normal case
        return {}


def _settings_key(settings: Settings) -> str:
    # The token only enters as part of a digest: the key itself never holds a secret.
    raw = settings.model_dump_json() + "\0" + (settings.token or "")
    return hashlib.sha256(raw.encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def _store_for(root: str, max_images: int, max_bytes: int, max_pixels: int) -> RunStore:
    return RunStore(
        root, max_images=max_images, max_image_bytes=max_bytes, max_image_pixels=max_pixels
    )


@st.cache_resource(show_spinner=False)
def _recovered_roots() -> set[str]:
    return set()


@st.cache_resource(show_spinner=False)
def _executor_for(key: str, _store: RunStore, _settings: Settings) -> RunExecutor:
    executor = RunExecutor(_store, _settings)
    recovered = _recovered_roots()
    # Once per storage folder and process: an executor made later (the secrets changed) must not
    # mark the runs an earlier one is still working on as interrupted.
    if str(_store.root) not in recovered:
        recovered.add(str(_store.root))
        executor.recover()
    return executor


def context() -> AppContext:
    """Settings (secrets over environment over defaults) and the cached store and executor."""
    try:
        settings = load_settings(secrets_overrides())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'setting'}: {e['msg']}" for e in exc.errors()
        )
        st.error(f"The configuration is not valid: {problems}.", icon=":material/settings:")
        st.stop()
    try:
        store = _store_for(
            str(Path(settings.storage_dir).resolve()),
            settings.max_images_per_run,
            settings.max_image_bytes,
            settings.max_image_pixels,
        )
    except OSError as exc:
        st.error(
            md_escape(f"The storage folder {settings.storage_dir} cannot be used: {exc.strerror}.")
        )
        st.stop()
    executor = _executor_for(_settings_key(settings), store, settings)
    return AppContext(settings, store, executor)


@st.cache_data(ttl=10, show_spinner=False)
def _disk_usage(root: str, counts: tuple[tuple[str, int], ...], _store: RunStore) -> int:
    return _store.disk_usage()


def disk_usage(store: RunStore) -> int:
    """Bytes the runs use, re-counted at most every 10 s (walking every file is not free),
    and at once when a run is added, deleted or changes status (e.g. its model arrived)."""
    return _disk_usage(str(store.root), tuple(sorted(store.counts().items())), store)


def display_backend(backend: str) -> str:
    """The backend as it may be shown: a URL loses any user:password part."""
    if "://" not in backend:
        return backend
    parts = urlsplit(backend)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
