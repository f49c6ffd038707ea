"""RunIndex: a derived SQLite index of the runs (status, image names, bytes), shared by processes;
metadata.json stays the truth, and a missing or damaged index is rebuilt from it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .models import RunStatus

log = logging.getLogger(__name__)

__all__ = ["BROKEN", "DRAFT", "INDEX_NAME", "RECHECK_BATCH", "RunIndex", "RunSummary"]

BROKEN = "broken"
# A queued run never started (an API client's draft): its own status in the index, so finding
# the runs in flight reads none of them. Listing and counts show it as queued.
DRAFT = "draft"
INDEX_NAME = ".index.sqlite"
LEGACY_FILES = (".index.json", ".changes")
SCHEMA_VERSION = 4
# Writes through any RunStore show at once. Hand edits: a listing call re-checks (two stats a
# run) the runs a writer left dirty, and a slice of RECHECK_BATCH others at most once per
# RECHECK_S, so a store this size sees a hand edit within RECHECK_S, a bigger one within
# size / RECHECK_BATCH rounds. Runs added or removed by hand show at once (the folder's mtime).
RECHECK_BATCH = 1000
RECHECK_S = 1.0
# A file rewritten within the file system's timestamp granularity (up to 2 s on some) can keep
# its mtime and size: a reader that read it this soon after its mtime reads it again next time.
_RACY_NS = 2_000_000_000
_BUSY_TIMEOUT_S = 30.0
_OPEN_TIMEOUT_S = 2.0
_T = TypeVar("_T")
_STATUSES = frozenset(s.value for s in RunStatus)
# What a re-check reads of a row; the folder's mtime only while its byte count is stored.
_CHECKED = (
    "SELECT run_id, meta_mtime, meta_size, "
    "CASE WHEN files_bytes IS NULL THEN NULL ELSE dir_mtime END, gen FROM runs "
)
_CHECK_DIRTY = _CHECKED + "WHERE dirty = 1"
_CHECK_FIRST = _CHECKED + "ORDER BY run_id DESC LIMIT ?"
_CHECK_NEXT = _CHECKED + "WHERE run_id < ? ORDER BY run_id DESC LIMIT ?"
# images: lower-cased names, one per line; meta_mtime/size: metadata.json's stat when read (-1:
# none); dirty: re-read on the next call; files_bytes: bytes of the run folder (NULL: count
# again) and dir_mtime the folder's mtime when counted; gen: bumped at each change, so a figure
# read before a change is not stored after it.
_SCHEMA = (
    "CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT NOT NULL, images TEXT NOT NULL, "
    "meta_mtime INTEGER NOT NULL, meta_size INTEGER NOT NULL, dirty INTEGER NOT NULL DEFAULT 0, "
    "files_bytes INTEGER, dir_mtime INTEGER, gen INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
    "CREATE INDEX runs_status ON runs (status, run_id)",
    "CREATE INDEX runs_dirty ON runs (dirty) WHERE dirty = 1",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # Runs per status, kept by triggers: counts and unfiltered totals without a scan.
    "CREATE TABLE tally (status TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TRIGGER runs_in AFTER INSERT ON runs BEGIN "
    "INSERT INTO tally VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER runs_out AFTER DELETE ON runs BEGIN "
    "UPDATE tally SET n = n - 1 WHERE status = OLD.status; END",
    "CREATE TRIGGER runs_moved AFTER UPDATE OF status ON runs "
    "WHEN OLD.status IS NOT NEW.status BEGIN "
    "UPDATE tally SET n = n - 1 WHERE status = OLD.status; "
    "INSERT INTO tally VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1; END",
    # The bytes of all counted runs, kept by triggers too; the runs to count found by an index.
    "CREATE INDEX runs_uncounted ON runs (run_id) WHERE files_bytes IS NULL",
    "CREATE TABLE usage (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)",
    "INSERT INTO usage VALUES (0, 0)",
    "CREATE TRIGGER bytes_in AFTER INSERT ON runs WHEN NEW.files_bytes IS NOT NULL BEGIN "
    "UPDATE usage SET bytes = bytes + NEW.files_bytes; END",
    "CREATE TRIGGER bytes_out AFTER DELETE ON runs WHEN OLD.files_bytes IS NOT NULL BEGIN "
    "UPDATE usage SET bytes = bytes - OLD.files_bytes; END",
    "CREATE TRIGGER bytes_moved AFTER UPDATE OF files_bytes ON runs BEGIN "
    "UPDATE usage SET bytes = bytes + coalesce(NEW.files_bytes, 0) "
    "- coalesce(OLD.files_bytes, 0); END",
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What filtering needs of a run: its status and lower-cased image names."""

    status: str
    images_lower: tuple[str, ...]


class RunIndex:
    """The index of the runs under `runs_dir`, kept in `<root>/.index.sqlite`."""

    def __init__(self, root: Path, runs_dir: Path) -> None:
        self.path = root / INDEX_NAME
        self._runs_dir = runs_dir
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._opened: tuple[int, int] | None = None  # (pid, inode) of the open database
        self._cursor: str | None = None  # where the next re-check slice starts
        self._rechecked = -RECHECK_S  # monotonic time of the last slice

    # --- connection ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close this process's connection (the index stays on disk)."""
        with self._lock:
            if self._conn is not None and self._opened and self._opened[0] == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self._conn = None
            self._opened = None

    def _db(self) -> sqlite3.Connection:
        """The open connection; reopened after a fork or when another process replaced the file."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = -1
        if self._conn is not None and self._opened == (os.getpid(), inode):
            return self._conn
        self.close()
        try:
            conn = self._open()
        except sqlite3.Error:
            # Damaged, or truncated under other processes' open connections (which then hold
            # it locked): a derived file, so it is replaced; the others follow the new inode.
            self._discard()
            conn = self._open()
        self._conn = conn
        self._opened = (os.getpid(), os.stat(self.path).st_ino)
        return conn

    def _open(self) -> sqlite3.Connection:
        # A short wait while opening: a healthy index never blocks a reader here.
        conn = sqlite3.connect(
            self.path, timeout=_OPEN_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            # Small pages and a short WAL: a commit appends a few pages, and on a nearly full
            # disk the index must not take the room the runs' own files need.
            conn.execute("PRAGMA page_size=1024")  # takes effect only on a new, empty file
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA wal_autocheckpoint=16")
            conn.execute("PRAGMA journal_size_limit=32768")
            # A derived index: a commit lost in a power cut costs a re-read, so no fsync per write.
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with _transaction(conn):
                    # Another process may have made the tables while this one waited.
                    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        conn.execute("DROP TABLE IF EXISTS runs")
                        conn.execute("DROP TABLE IF EXISTS state")
                        conn.execute("DROP TABLE IF EXISTS tally")
                        conn.execute("DROP TABLE IF EXISTS usage")
                        for statement in _SCHEMA:
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _discard(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.path}{suffix}")

    def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(conn)` under the lock; on a damaged index, rebuild it and run `fn` again."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    return fn(self._db())
                except sqlite3.OperationalError:
                    raise  # locked, full, an I/O error: the file itself is fine
                except sqlite3.DatabaseError:
                    if attempt:
                        raise
                    self._discard()
            raise AssertionError("unreachable")

    # --- writers -------------------------------------------------------------------------------

    def record(self, run_id: str, summary: RunSummary, *, dir_before: int | None = None) -> None:
        """A writer saved this run's metadata (and maybe its files): store what it wrote.

        `dir_before`: the runs folder's mtime before the writer created the run folder, so
        this create is not taken for a hand-made change of the folder.
        """
        meta = os.path.join(self._runs_dir, run_id, "metadata.json")
        try:
            st = os.lstat(meta)
            mtime, size = st.st_mtime_ns, st.st_size
        except OSError:
            mtime, size = -1, 0
        row = (run_id, summary.status, "\n".join(summary.images_lower), mtime, size)

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO runs (run_id, status, images, meta_mtime, meta_size) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                    "status = excluded.status, images = excluded.images, "
                    "meta_mtime = excluded.meta_mtime, meta_size = excluded.meta_size, "
                    "dirty = 0, files_bytes = NULL, gen = gen + 1",
                    row,
                )
                if dir_before is not None:
                    self._advance_dir(conn, dir_before)

        self._safely(write)

    def forget(self, run_id: str, *, dir_before: int) -> None:
        """A writer deleted this run."""

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                self._advance_dir(conn, dir_before)

        self._safely(write)

    def files_changed(self, run_id: str) -> None:
        """Files of this run changed: re-read its metadata and recount its bytes next time."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET dirty = 1, files_bytes = NULL, gen = gen + 1 WHERE run_id = ?",
                (run_id,),
            )

        self._safely(write)

    def runs_dir_mtime(self) -> int:
        """The runs folder's mtime now (for `record`'s and `forget`'s `dir_before`)."""
        return os.stat(self._runs_dir).st_mtime_ns

    def _advance_dir(self, conn: sqlite3.Connection, before: int) -> None:
        # Our own create or delete changed the folder's mtime: if the index had seen the folder
        # as it was just before, it has now seen it as it is (else the next reader rescans).
        conn.execute(
            "UPDATE state SET value = ? WHERE key = 'dir_mtime' AND value = ?",
            (self.runs_dir_mtime(), before),
        )

    def _safely(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        # The run's files are written already: an index that cannot be written is rebuilt later.
        try:
            self._run(fn)
        except sqlite3.Error:
            self._discard_later()

    def _discard_later(self) -> None:
        with contextlib.suppress(sqlite3.Error), self._lock:
            self._db().execute("DELETE FROM state WHERE key = 'built'")

    # --- readers -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the index up to date: build it if missing, take in hand-made changes."""
        try:
            self._run(self._refresh)
        except sqlite3.OperationalError as exc:
            # A full disk, say: what the index holds is still served (writers keep it right).
            log.warning("the run index at %s could not be refreshed: %s", self.path, exc)

    def _refresh(self, conn: sqlite3.Connection) -> None:
        state = dict(conn.execute("SELECT key, value FROM state").fetchall())
        dir_mtime = self.runs_dir_mtime()
        if not state.get("built"):
            self._build(conn)
        elif state.get("dir_mtime") != dir_mtime:
            self._reconcile(conn, dir_mtime)
        self._recheck(conn)

    def _build(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            if conn.execute("SELECT value FROM state WHERE key = 'built'").fetchone():
                return  # another process built it while this one waited
            dir_mtime = self.runs_dir_mtime()
            conn.execute("DELETE FROM runs")
            conn.execute("DELETE FROM tally")
            conn.execute("UPDATE usage SET bytes = 0")
            conn.executemany(
                "INSERT INTO runs (run_id, status, images, meta_mtime, meta_size, dirty) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self._read_row(run_id) for run_id in self._scan()),
            )
            conn.execute("INSERT OR REPLACE INTO state VALUES ('dir_mtime', ?)", (dir_mtime,))
            conn.execute("INSERT OR REPLACE INTO state VALUES ('built', 1)")
        for legacy in LEGACY_FILES:  # the JSON cache and change marker of earlier versions
            with contextlib.suppress(OSError):
                os.unlink(self.path.with_name(legacy))

    def _reconcile(self, conn: sqlite3.Connection, dir_mtime: int) -> None:
        """Runs added or removed by hand (or by a writer whose record raced another)."""
        with _transaction(conn):
            on_disk = set(self._scan())
            known = {r for (r,) in conn.execute("SELECT run_id FROM runs")}
            conn.executemany("DELETE FROM runs WHERE run_id = ?", ((r,) for r in known - on_disk))
            conn.executemany(
                "INSERT INTO runs (run_id, status, images, meta_mtime, meta_size, "
                "dirty) VALUES (?, ?, ?, ?, ?, ?)",
                (self._read_row(run_id) for run_id in on_disk - known),
            )
            conn.execute("INSERT OR REPLACE INTO state VALUES ('dir_mtime', ?)", (dir_mtime,))

    def _recheck(self, conn: sqlite3.Connection) -> None:
        """Re-stat the dirty runs and a rolling slice of the others; re-read what changed."""
        rows = conn.execute(_CHECK_DIRTY).fetchall()
        dirty = {r[0] for r in rows}
        window = []
        if time.monotonic() - self._rechecked >= RECHECK_S:
            self._rechecked = time.monotonic()
            start = self._cursor
            if start is None:
                window = conn.execute(_CHECK_FIRST, (RECHECK_BATCH,)).fetchall()
            else:
                window = conn.execute(_CHECK_NEXT, (start, RECHECK_BATCH)).fetchall()
            self._cursor = window[-1][0] if len(window) == RECHECK_BATCH else None
        changed: list[tuple[object, ...]] = []
        recount: list[tuple[str, int]] = []
        gone: list[tuple[str]] = []
        seen: set[str] = set()
        for run_id, meta_mtime, meta_size, counted_mtime, gen in [*rows, *window]:
            if run_id in seen:
                continue
            seen.add(run_id)
            folder = os.path.join(self._runs_dir, run_id)
            try:
                folder_mtime = os.lstat(folder).st_mtime_ns
            except OSError:
                gone.append((run_id,))
                continue
            if counted_mtime is not None and counted_mtime != folder_mtime:
                recount.append((run_id, gen))
            try:
                st = os.lstat(os.path.join(folder, "metadata.json"))
                stat = (st.st_mtime_ns, st.st_size)
            except OSError:
                stat = (-1, 0)
            if stat != (meta_mtime, meta_size) or run_id in dirty:
                new = self._read_row(run_id)
                changed.append((*new[1:], run_id, gen))
        if not (changed or recount or gone):
            return
        with _transaction(conn):
            conn.executemany("DELETE FROM runs WHERE run_id = ?", gone)
            # Compare-and-set on gen: a writer's record made meanwhile is newer than this read.
            conn.executemany(
                "UPDATE runs SET status = ?, images = ?, meta_mtime = ?, meta_size = ?, "
                "dirty = ?, files_bytes = NULL, gen = gen + 1 WHERE run_id = ? AND gen = ?",
                changed,
            )
            conn.executemany(
                "UPDATE runs SET files_bytes = NULL, gen = gen + 1 WHERE run_id = ? AND gen = ?",
                recount,
            )

    def _scan(self) -> list[str]:
        from .listing import is_valid_run_id  # listing imports this module

        with os.scandir(self._runs_dir) as entries:
            return [
                e.name
                for e in entries
                if is_valid_run_id(e.name) and e.is_dir(follow_symlinks=False)
            ]

    def _read_row(self, run_id: str) -> tuple[str, str, str, int, int, int]:
        """(run_id, status, images, mtime, size, dirty) as read from the run's metadata now."""
        meta = os.path.join(self._runs_dir, run_id, "metadata.json")
        try:
            st = os.lstat(meta)
        except OSError:
            return (run_id, BROKEN, "", -1, 0, 0)  # a run folder without metadata
        summary = summarize(meta)
        racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
        return (
            run_id,
            summary.status,
            "\n".join(summary.images_lower),
            st.st_mtime_ns,
            st.st_size,
            int(racy),
        )

    def ids(self) -> list[str]:
        """Every run id, newest first."""
        try:
            return self._ids()
        except sqlite3.OperationalError as exc:
            return [r for r, _ in self._from_files(exc)]

    def count(self) -> int:
        """How many runs there are."""
        try:
            return self._count()
        except sqlite3.OperationalError as exc:
            return len(self._from_files(exc))

    def page(
        self, statuses: Iterable[str], needle: str, limit: int, offset: int
    ) -> tuple[list[str], int]:
        """The ids of one page (newest first) of the runs matching, and how many match in all."""
        try:
            return self._page(statuses, needle, limit, offset)
        except sqlite3.OperationalError as exc:
            wanted = set(statuses)
            ids = [
                r
                for r, summary in self._from_files(exc)
                if (not wanted or summary.status in wanted)
                and (not needle or needle in r or any(needle in i for i in summary.images_lower))
            ]
            return ids[max(offset, 0) : max(offset, 0) + max(limit, 0)], len(ids)

    def counts(self) -> dict[str, int]:
        """How many runs are in each status (`broken` among them)."""
        try:
            return self._counts()
        except sqlite3.OperationalError as exc:
            result: dict[str, int] = {}
            for _, summary in self._from_files(exc):
                result[summary.status] = result.get(summary.status, 0) + 1
            return result

    def disk_usage(self) -> int:
        """Bytes of all run folders: the stored counts, recounting only runs that changed."""
        try:
            return self._disk_usage()
        except sqlite3.OperationalError as exc:
            return sum(
                _folder_bytes(os.path.join(self._runs_dir, r)) for r, _ in self._from_files(exc)
            )

    def _from_files(self, exc: sqlite3.OperationalError) -> list[tuple[str, RunSummary]]:
        """Every run read from its files, newest first: the slow way, when the index fails."""
        log.warning("the run index at %s cannot be used (%s): reading the files", self.path, exc)
        found = []
        for run_id in sorted(self._scan(), reverse=True):
            meta = os.path.join(self._runs_dir, run_id, "metadata.json")
            summary = summarize(meta) if os.path.lexists(meta) else RunSummary(BROKEN, ())
            found.append((run_id, summary))
        return found

    def _ids(self) -> list[str]:
        self.refresh()
        return self._run(
            lambda c: [r for (r,) in c.execute("SELECT run_id FROM runs ORDER BY run_id DESC")]
        )

    def _count(self) -> int:
        self.refresh()
        return sum(self._tally().values())

    def _tally(self) -> dict[str, int]:
        rows = self._run(lambda c: c.execute("SELECT status, n FROM tally WHERE n > 0").fetchall())
        return {str(status): int(n) for status, n in rows}

    def _page(
        self, statuses: Iterable[str], needle: str, limit: int, offset: int
    ) -> tuple[list[str], int]:
        self.refresh()
        where, args = [], []
        wanted = sorted(set(statuses))
        if wanted:
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args.extend(wanted)
        if needle:
            where.append("(instr(run_id, ?) > 0 OR instr(images, ?) > 0)")
            args.extend([needle, needle])
        # Only fixed fragments with placeholders are joined: the values go as parameters.
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        count_sql = f"SELECT COUNT(*) FROM runs{clause}"  # noqa: S608
        page_sql = f"SELECT run_id FROM runs{clause} ORDER BY run_id DESC LIMIT ? OFFSET ?"  # noqa: S608

        def query(conn: sqlite3.Connection) -> tuple[list[str], int]:
            with _transaction(conn, "DEFERRED"):  # one snapshot for the page and the total
                if needle:
                    total = conn.execute(count_sql, args).fetchone()[0]
                else:  # the tally holds it: no scan
                    tally = dict(conn.execute("SELECT status, n FROM tally").fetchall())
                    total = sum(n for s, n in tally.items() if not wanted or s in wanted)
                ids = [
                    r
                    for (r,) in conn.execute(
                        page_sql,
                        [*args, max(limit, 0), max(offset, 0)],
                    )
                ]
            return ids, int(total)

        return self._run(query)

    def _counts(self) -> dict[str, int]:
        self.refresh()
        return self._tally()

    def _disk_usage(self) -> int:
        self.refresh()
        stale = self._run(
            lambda c: c.execute("SELECT run_id, gen FROM runs WHERE files_bytes IS NULL").fetchall()
        )
        counted = []
        for run_id, gen in stale:
            folder = os.path.join(self._runs_dir, run_id)
            with contextlib.suppress(OSError):
                mtime = os.lstat(folder).st_mtime_ns
                counted.append((_folder_bytes(folder), mtime, run_id, gen))

        def write(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            with _transaction(conn):
                conn.executemany(
                    "UPDATE runs SET files_bytes = ?, dir_mtime = ? WHERE run_id = ? AND gen = ?",
                    counted,
                )
                total = conn.execute("SELECT bytes FROM usage").fetchone()[0]
                missing = conn.execute("SELECT run_id FROM runs WHERE files_bytes IS NULL")
                return int(total), [r for (r,) in missing]

        total, missing = self._run(write)
        # A run changed while it was counted: counted now without storing the figure.
        return total + sum(_folder_bytes(os.path.join(self._runs_dir, r)) for r in missing)


def _folder_bytes(folder: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, kind: str = "IMMEDIATE") -> Iterator[None]:
    conn.execute(f"BEGIN {kind}")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def summarize(meta: str) -> RunSummary:
    """The status (`draft` for a queued run never started) and image names in a metadata.json,
    or `broken` when it cannot be read."""
    try:
        fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            raw = json.loads(handle.read())
        status = raw["status"]
        images = raw.get("images") or []
        if status not in _STATUSES or not isinstance(images, list):
            raise TypeError
        if status == RunStatus.queued.value and raw.get("submittedAt") is None:
            status = DRAFT
        return RunSummary(status, tuple(str(i).lower() for i in images))
    except (OSError, ValueError, TypeError, KeyError, RecursionError, AttributeError):
        return RunSummary(BROKEN, ())  # RecursionError: JSON nested past the parser's limit
