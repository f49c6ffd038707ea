"""Listing runs for RunStore: pages newest first, status and text filters, counts, disk use,
all answered by the derived index (run_index)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidRunId, StorageError
from .models import ACTIVE_STATUSES, RunStatus, VGGTRun
from .run_index import DRAFT, RunIndex

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
    load: Callable[[str], VGGTRun]

    def run_ids(self) -> list[str]:
        """Every run id under the root, newest first (ids sort by creation time)."""
        return self._index.ids()

    def run_count(self) -> int:
        """How many runs are stored."""
        return self._index.count()

    def list_runs(
        self,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        query: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> RunPage:
        """A page of runs, newest first, filtered by status and by text in the id or image names."""
        wanted = _status_set(status)
        needle = (query or "").strip().lower()
        page_ids, total = self._index.page(wanted, needle, limit, offset)
        runs, broken = [], []
        for run_id in page_ids:
            try:
                runs.append(self.load(run_id))
            except StorageError as exc:
                broken.append(BrokenRun(run_id, str(exc)))
        return RunPage(runs=runs, total=total, broken=broken)

    def started_runs(self) -> list[VGGTRun]:
        """The runs in flight or waiting for a worker as the index last saw them, newest first
        (re-read: one may have ended since); never-started drafts are not read at all."""
        wanted = {s.value for s in (*ACTIVE_STATUSES, RunStatus.queued)}
        ids, _ = self._index.page(wanted, "", 1 << 30, 0)
        runs = []
        for run_id in ids:
            with contextlib.suppress(StorageError):
                runs.append(self.load(run_id))
        return runs

    def counts(self) -> dict[str, int]:
        """How many runs are in each status (`broken` for unreadable metadata)."""
        result = dict.fromkeys((s.value for s in RunStatus), 0)
        tally = self._index.counts()
        drafts = tally.pop(DRAFT, 0)
        result.update(tally)
        result[RunStatus.queued.value] += drafts
        return result

    def disk_usage(self) -> int:
        """Bytes used by all runs' files (kept per run, recounted only where files changed)."""
        return self._index.disk_usage()

    def files_changed(self, run_id: str) -> None:
        """Call after adding or removing files in a run folder (e.g. a new GLB version)."""
        if not is_valid_run_id(run_id):
            raise InvalidRunId(f"'{str(run_id)[:80]}' is not a run id (run_<epoch ms>_<6 chars>)")
        self._index.files_changed(run_id)


def _status_set(status: RunStatus | str | Iterable[RunStatus | str] | None) -> set[str]:
    if status is None:
        return set()
    wanted = (
        {RunStatus(status).value}
        if isinstance(status, str)
        else {RunStatus(s).value for s in status}
    )
    if RunStatus.queued.value in wanted:
        wanted.add(DRAFT)
    return wanted
