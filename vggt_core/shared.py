"""The process's one StudioService per storage folder, shared by every face in the process.

The pages and the REST API served by the same `streamlit run app.py` both take their service
from `process_services()`: one executor, one concurrency bound, one sweep per storage folder.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

from .config import StudioConfig
from .service import StudioService

__all__ = ["ServiceRegistry", "process_services"]


def _config_key(config: StudioConfig) -> str:
    # The secrets only enter as part of a digest: the key itself never holds one.
    raw = "\0".join([config.model_dump_json(), config.token or "", config.api_token_value or ""])
    return hashlib.sha256(raw.encode()).hexdigest()


class ServiceRegistry:
    """One service per storage folder; a service whose settings changed is replaced gracefully."""

    def __init__(self, factory: Callable[[StudioConfig], StudioService] = StudioService) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._services: dict[str, tuple[str, StudioService]] = {}

    def get(self, config: StudioConfig) -> StudioService:
        """The service for this configuration's storage folder, built (and recovered) once."""
        root = str(Path(config.storage_dir).resolve())
        key = _config_key(config)
        with self._lock:
            current = self._services.get(root)
            if current is not None and current[0] == key:
                return current[1]
            service = self._factory(config)
            if current is not None:
                # Its running runs finish; its waiting ones are taken over through the disk.
                current[1].close(interrupt=False)
            self._services[root] = (key, service)
        service.recover()
        return service

    def close(self, *, interrupt: bool = True, timeout: float = 5.0) -> None:
        """Close every service (the process is stopping): running runs end interrupted fast,
        waiting runs stay waiting on disk for the next start."""
        with self._lock:
            services = [service for _, service in self._services.values()]
            self._services.clear()
        for service in services:
            service.close(interrupt=interrupt, timeout=timeout)


_PROCESS_SERVICES = ServiceRegistry()


def process_services() -> ServiceRegistry:
    """This process's registry (module-level, so the API's threads need no Streamlit call)."""
    return _PROCESS_SERVICES
