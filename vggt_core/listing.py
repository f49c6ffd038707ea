"""Listing runs for RunStore: pages newest first, status and text filters, counts, disk use."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StorageError
from .models import RunStatus, VGGTRun
from .run_index import RunIndex, RunSummary

__all__ = ["BrokenRun", "RunListing", "RunPage", "is_valid_run_id"]

RUN_ID_PATTERN = re.compile(r"run_[0-9]{13}_[a-z0-9]{6}")  # ASCII: \d takes any digit


def is_valid_run_id(run_id: object) -> bool:
    """True when `run_id` has the exact shape of a run id (and so is a safe folder name)."""
    return isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id) is not None


@dataclass(frozen=True)
class BrokenRun:
    """A run folder whose metadata cannot be read, with the reason."""

    run_id: str
    reason: str


@dataclass(frozen=True)
class RunPage:
    """One page of the listing, newest first, and how many runs matched in all."""

    runs: list[VGGTRun]
    total: int
    broken: list[BrokenRun] = field(default_factory=list)


class RunListing:
    """The listing half of RunStore (a mixin): reads `runs_dir`, `_index` and `load`."""

    runs_dir: Path
    _index: RunIndex
    _counts: tuple[Mapping[str, RunSummary], dict[str, int]] | None
    load: Callable[[str], VGGTRun]

    def run_ids(self) -> list[str]:
        """Every run id under the root, newest first (ids sort by creation time)."""
        return self._index.run_ids(self.runs_dir, self._scan_run_ids)

    def _scan_run_ids(self) -> list[str]:
        with os.scandir(self.runs_dir) as entries:
            ids = [
                e.name
                for e in entries
                if is_valid_run_id(e.name) and e.is_dir(follow_symlinks=False)
            ]
        ids.sort(reverse=True)
        return ids

    def list_runs(
        self,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        query: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> RunPage:
        """A page of runs, newest first, filtered by status and by text in the id or image names."""
        ids = self.run_ids()
        wanted = _status_set(status)
        needle = (query or "").strip().lower()
        if wanted or needle:
            summaries = self._index.summaries(self.runs_dir, ids)
            ids = [
                run_id
                for run_id in ids
                if (s := summaries.get(run_id)) is not None
                and (not wanted or s.status in wanted)
                and (not needle or needle in run_id or any(needle in i for i in s.images_lower))
            ]
        page_ids = ids[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        runs, broken = [], []
        for run_id in page_ids:
            try:
                runs.append(self.load(run_id))
            except StorageError as exc:
                broken.append(BrokenRun(run_id, str(exc)))
        return RunPage(runs=runs, total=len(ids), broken=broken)

    def counts(self) -> dict[str, int]:
        """How many runs are in each status (`broken` for unreadable metadata)."""
        summaries = self._index.summaries(self.runs_dir, self.run_ids())
        cached = self._counts
        if cached is not None and cached[0] is summaries:
            return dict(cached[1])  # the same view as last time: nothing changed since
        result = dict.fromkeys((s.value for s in RunStatus), 0)
        for summary in summaries.values():
            result[summary.status] = result.get(summary.status, 0) + 1
        self._counts = (summaries, result)
        return dict(result)

    def disk_usage(self) -> int:
        """Bytes used by all runs' files."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.runs_dir):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
        return total


def _status_set(status: RunStatus | str | Iterable[RunStatus | str] | None) -> set[str]:
    if status is None:
        return set()
    if isinstance(status, str):
        return {RunStatus(status).value}
    return {RunStatus(s).value for s in status}
