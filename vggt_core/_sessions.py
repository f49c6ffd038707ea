"""SessionKeeper: the backend sessions of just-completed runs, kept open for a bounded time.

The Space sets the frame filter's choices per client session when it reconstructs, so a re-render
of one frame only works in the session that reconstructed. A completed run's session is kept here
for `keep_s` seconds (at most `max_kept` at once, the oldest closed first), then closed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from .space import SpaceSession

__all__ = ["SessionKeeper"]


class SessionKeeper:
    """Open sessions by run id, each closed once it is older than `keep_s` or evicted."""

    def __init__(self, keep_s: float = 600.0, max_kept: int = 8) -> None:
        self.keep_s = keep_s
        self.max_kept = max_kept
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[SpaceSession, float]] = OrderedDict()
        self._closed = False

    def keep(self, run_id: str, session: SpaceSession) -> bool:
        """Take over an open session for the run; False (and the session is left alone) when
        keeping is off or the keeper is closed."""
        if self.keep_s <= 0 or self.max_kept <= 0:
            return False
        with self._lock:
            if self._closed:
                return False
            session.keep()
            stale = self._expire_locked()
            old = self._kept.pop(run_id, None)
            if old is not None:
                stale.append(old[0])
            self._kept[run_id] = (session, time.monotonic() + self.keep_s)
            while len(self._kept) > self.max_kept:
                stale.append(self._kept.popitem(last=False)[1][0])
        _close_all(stale)
        return True

    @contextlib.contextmanager
    def borrow(self, run_id: str) -> Iterator[SpaceSession | None]:
        """The run's kept session while it is still fresh, else None."""
        with self._lock:
            stale = self._expire_locked()
            entry = self._kept.get(run_id)
        _close_all(stale)
        yield None if entry is None else entry[0]

    def has(self, run_id: str) -> bool:
        """True while the run's session is kept."""
        with self.borrow(run_id) as session:
            return session is not None

    def close(self) -> None:
        """Close every kept session; keep nothing from now on."""
        with self._lock:
            self._closed = True
            sessions = [session for session, _ in self._kept.values()]
            self._kept.clear()
        _close_all(sessions)

    def _expire_locked(self) -> list[SpaceSession]:
        now = time.monotonic()
        expired = [run_id for run_id, (_, until) in self._kept.items() if until <= now]
        return [self._kept.pop(run_id)[0] for run_id in expired]


def _close_all(sessions: list[SpaceSession]) -> None:
    for session in sessions:
        with contextlib.suppress(Exception):
            session.close()
