"""RunIndex: run ids, statuses and image names cached by a change marker, for fast listing."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .models import RunStatus

__all__ = ["RunIndex", "RunSummary"]

BROKEN = "broken"
_STATUSES = frozenset(s.value for s in RunStatus)
# A file rewritten within the file system's timestamp granularity (up to 2 s on some) can keep
# its mtime and size; an entry read this soon after its mtime is re-read on the next call.
_RACY_NS = 2_000_000_000
# Writes through any RunStore bump the marker at once; a hand edit of a file (which does not)
# shows within this many seconds.
RECHECK_S = 5.0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What filtering needs of a run: its status and lower-cased image names."""

    status: str
    images_lower: tuple[str, ...]


class RunIndex:
    """A derived cache kept in `.index.json`; writes through any RunStore show at once, hand
    edits of files within RECHECK_S."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._marker = path.with_name(".changes")
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, int, RunSummary]] | None = None
        self._ids: tuple[tuple[bytes, int], float, list[str]] | None = None
        self._fresh: tuple[tuple[bytes, int], float, list[str], Mapping[str, RunSummary]] | None = (
            None
        )

    def bump(self) -> None:
        """Tell every RunIndex on this root, in any process, that a run changed."""
        with contextlib.suppress(OSError):
            fd = os.open(self._marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, os.urandom(16))
            finally:
                os.close(fd)

    def _signature(self, runs_dir: Path) -> tuple[bytes, int]:
        try:
            marker = self._marker.read_bytes()
        except OSError:
            marker = b""
        # The folder's mtime catches runs created or removed by hand.
        return marker, os.stat(runs_dir).st_mtime_ns

    def run_ids(self, runs_dir: Path, scan: Callable[[], list[str]]) -> list[str]:
        """`scan()`'s result, reused while nothing changed (and for at most RECHECK_S)."""
        signature = self._signature(runs_dir)
        with self._lock:
            if self._ids is not None:
                seen, at, ids = self._ids
                if seen == signature and time.monotonic() - at < RECHECK_S:
                    return list(ids)
        ids = scan()
        with self._lock:
            self._ids = (signature, time.monotonic(), ids)
        return list(ids)

    def _load(self) -> dict[str, tuple[int, int, RunSummary]]:
        try:
            raw = json.loads(self._path.read_bytes())
            return {
                run_id: (int(mtime), int(size), RunSummary(str(status), tuple(map(str, images))))
                for run_id, (mtime, size, status, images) in raw.items()
            }
        # A damaged cache is rebuilt: any JSON at all (a list, deep nesting) lands here.
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            return {}

    def summaries(self, runs_dir: Path, run_ids: list[str]) -> Mapping[str, RunSummary]:
        """The summary of each run id, re-reading only metadata files changed since last time.

        While nothing changed, the very same read-only mapping is returned (no copy of 10,000).
        """
        signature = self._signature(runs_dir)
        with self._lock:
            if self._fresh is not None:
                seen, at, ids, view = self._fresh
                if seen == signature and ids == run_ids and time.monotonic() - at < RECHECK_S:
                    return view
            view = MappingProxyType(self._full_pass(runs_dir, run_ids))
            self._fresh = (signature, time.monotonic(), list(run_ids), view)
            return view

    def _full_pass(self, runs_dir: Path, run_ids: list[str]) -> dict[str, RunSummary]:
        if self._entries is None:
            self._entries = self._load()
        entries = self._entries
        result: dict[str, RunSummary] = {}
        changed = False
        now = time.time_ns()
        for run_id in run_ids:
            meta = os.path.join(runs_dir, run_id, "metadata.json")
            try:
                st = os.lstat(meta)
            except OSError:
                result[run_id] = RunSummary(BROKEN, ())  # a run folder without metadata
                continue
            cached = entries.get(run_id)
            if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
                result[run_id] = cached[2]
                continue
            summary = _summarize(meta)
            racy = now - st.st_mtime_ns < _RACY_NS
            entries[run_id] = (-1 if racy else st.st_mtime_ns, st.st_size, summary)
            result[run_id] = summary
            changed = changed or not racy
        gone = entries.keys() - set(run_ids)
        for run_id in gone:
            del entries[run_id]
        if changed or gone:
            self._save(entries)
        return result

    def _save(self, entries: dict[str, tuple[int, int, RunSummary]]) -> None:
        data = {k: [m, s, v.status, list(v.images_lower)] for k, (m, s, v) in entries.items()}
        tmp = self._path.with_name(f".tmp-{self._path.name}.{os.getpid()}.{threading.get_ident()}")
        # The index is only a cache: losing a write costs a re-read, so no fsync here.
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data, separators=(",", ":")))
            tmp.replace(self._path)


def _summarize(meta: str) -> RunSummary:
    try:
        fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            raw = json.loads(handle.read())
        status = raw["status"]
        images = raw.get("images") or []
        if status not in _STATUSES or not isinstance(images, list):
            raise TypeError
        return RunSummary(status, tuple(str(i).lower() for i in images))
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return RunSummary(BROKEN, ())  # RecursionError: JSON nested past the parser's limit
