"""Who runs waiting runs on a storage folder: one small file per live service with workers.

A service that runs waiting runs (an app, `python -m vggt_core worker`, the API server) touches
`<storage>/.workers/<pid>.<token>.alive` every few seconds while it lives and removes it when
it closes. A file not touched for STALE_AFTER_S belongs to a process that died or froze; readers
ignore it and clear it away. The command line reads these to tell whether a run it records as
waiting will be picked up by someone (the sweep takes it within about 10 s) or must run itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BEAT_INTERVAL_S", "STALE_AFTER_S", "Heartbeat", "LiveWorker", "live_workers"]

WORKERS_DIR = ".workers"
SUFFIX = ".alive"
BEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 30.0


@dataclass(frozen=True)
class LiveWorker:
    """A process whose service runs waiting runs on this storage, and when it last said so."""

    pid: int
    age_s: float


class Heartbeat:
    """Touches this service's file every `interval_s` on a daemon thread until `stop()`."""

    def __init__(self, storage_root: Path, interval_s: float = BEAT_INTERVAL_S) -> None:
        self.path = storage_root / WORKERS_DIR / f"{os.getpid()}.{secrets.token_hex(4)}{SUFFIX}"
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vggt-heartbeat", daemon=True)

    def start(self) -> None:
        """Write the file now (so a command run right after sees it) and keep it fresh."""
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop touching the file and remove it: this process takes no more waiting runs."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _beat(self) -> None:
        with contextlib.suppress(OSError):  # a passing disk problem; the next beat tries again
            self.path.parent.mkdir(exist_ok=True)
            self.path.touch()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._beat()


def live_workers(storage_root: Path, stale_after_s: float = STALE_AFTER_S) -> list[LiveWorker]:
    """The processes that run waiting runs on this storage now; stale files are removed."""
    folder = storage_root / WORKERS_DIR
    found: list[LiveWorker] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    now = time.time()
    for entry in entries:
        if not entry.name.endswith(SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            pid = int(entry.name.split(".", 1)[0])
        except (OSError, ValueError):
            continue
        if age > stale_after_s:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)  # a live owner writes it again at its next beat
            continue
        found.append(LiveWorker(pid=pid, age_s=max(age, 0.0)))
    return sorted(found, key=lambda w: w.age_s)
