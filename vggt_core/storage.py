"""RunStore: the on-disk layout of runs, atomic metadata and artifacts, images, listing."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from pydantic import ValidationError

from .config import Settings
from .images import ImageRejected, check_image, is_plain_name, safe_image_name, unique_names
from .models import RunStatus, VGGTRun, VGGTSettings
from .run_index import RunIndex, RunSummary

__all__ = [
    "ARTIFACT_FILES",
    "ArtifactKind",
    "BrokenRun",
    "ImagesRejected",
    "InvalidRunId",
    "RunBusy",
    "RunNotFound",
    "RunPage",
    "RunStore",
    "StorageError",
    "atomic_write",
    "commit_file",
    "is_valid_run_id",
    "temp_sibling",
]

RUN_ID_PATTERN = re.compile(r"run_[0-9]{13}_[a-z0-9]{6}")  # ASCII: \d takes any digit
ArtifactKind = Literal["glb", "predictions"]
ARTIFACT_FILES: dict[str, str] = {"glb": "scene.glb", "predictions": "predictions.npz"}
METADATA = "metadata.json"
IMAGES = "images"
TMP_PREFIX = ".tmp-"
_ALPHABET = string.ascii_lowercase + string.digits


class StorageError(Exception):
    """Any refusal of the store, with a message a person can act on."""


class InvalidRunId(StorageError):
    """A run id that is not of the form `run_<epoch ms>_<6 of a-z0-9>`."""


class RunNotFound(StorageError):
    """No run with that id under the storage root."""


class RunBusy(StorageError):
    """The run's state does not allow the change (e.g. deleting an active run)."""


class ImagesRejected(StorageError):
    """A batch of images refused as a whole; `problems` names each bad file and why."""

    def __init__(self, problems: list[ImageRejected]) -> None:
        self.problems = problems
        super().__init__("No image was stored. " + " ".join(f"{p}." for p in problems))


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


def is_valid_run_id(run_id: object) -> bool:
    """True when `run_id` has the exact shape of a run id (and so is a safe folder name)."""
    return isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id) is not None


def temp_sibling(path: Path) -> Path:
    """A fresh hidden name beside `path` that listing, artifacts and recovery know as temporary."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")


def commit_file(tmp: Path, path: Path) -> None:
    """Make a fully written `tmp` durable and put it at `path` in one step."""
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one, never half."""
    tmp = temp_sibling(path)
    try:
        tmp.write_bytes(data)
        commit_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(run: VGGTRun) -> bytes:
    return json.dumps(run.to_json_dict(), indent=2, ensure_ascii=False).encode()


def _read_no_follow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


class RunStore:
    """All runs under `root/runs/<runId>/`; the disk is the single source of truth."""

    def __init__(
        self,
        root: Path | str,
        *,
        max_images: int = 200,
        max_image_bytes: int = 30 * 1024 * 1024,
        max_image_pixels: int = 100_000_000,
    ) -> None:
        self.root = Path(root).resolve()
        self.runs_dir = self.root / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._locks_dir = self.root / ".locks"
        self._locks_dir.mkdir(exist_ok=True)
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self._thread_locks: dict[str, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()
        self._index = RunIndex(self.root / ".index.json")
        self._counts: tuple[Mapping[str, RunSummary], dict[str, int]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RunStore:
        """The store at the configured root with the configured upload limits."""
        return cls(
            settings.storage_dir,
            max_images=settings.max_images_per_run,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )

    # --- paths -------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run; refuses any id that is not a run id or resolves outside the root."""
        if not is_valid_run_id(run_id):
            raise InvalidRunId(f"'{str(run_id)[:80]}' is not a run id (run_<epoch ms>_<6 chars>)")
        path = self.runs_dir / run_id
        if path.is_symlink() or not path.resolve().is_relative_to(self.runs_dir):
            raise RunNotFound(f"No such run: {run_id}")
        return path

    def _existing_dir(self, run_id: str) -> Path:
        path = self.run_dir(run_id)
        if not path.is_dir():
            raise RunNotFound(f"No such run: {run_id}")
        if not (path / METADATA).is_file() or (path / METADATA).is_symlink():
            raise StorageError(f"Run {run_id}: metadata.json is missing")
        return path

    def artifact_path(self, run_id: str, kind: ArtifactKind) -> Path:
        """Where a run's artifact lives (`scene.glb` or `predictions.npz`), present or not."""
        if kind not in ARTIFACT_FILES:
            raise ValueError(f"Unknown artifact kind {kind!r}; expected 'glb' or 'predictions'")
        return self.run_dir(run_id) / ARTIFACT_FILES[kind]

    def artifact_exists(self, run_id: str, kind: ArtifactKind) -> bool:
        """True when the artifact is a regular file inside the run (a symlink never counts)."""
        path = self.artifact_path(run_id, kind)
        return path.is_file() and not path.is_symlink()

    def image_paths(self, run_id: str) -> list[Path]:
        """The run's stored images in model order (sorted name); planted links are skipped."""
        run = self.load(run_id)
        folder = self.run_dir(run_id) / IMAGES
        paths = []
        for name in sorted(run.images):
            path = folder / name
            if (
                is_plain_name(name)
                and path.is_file()
                and not path.is_symlink()
                and not folder.is_symlink()
            ):
                paths.append(path)
        return paths

    # --- metadata ----------------------------------------------------------------------------

    def create_run(
        self,
        settings: VGGTSettings | None = None,
        *,
        backend: str | None = None,
        presize: bool = True,
    ) -> VGGTRun:
        """Create an empty `queued` run with these settings and return it."""
        # The folder is built under a hidden name and renamed into place whole: a crash half-way
        # must not leave a run folder without metadata, which the listing would call broken.
        staging = self.runs_dir / f"{TMP_PREFIX}run.{secrets.token_hex(8)}"
        (staging / IMAGES).mkdir(parents=True)
        try:
            while True:
                run_id = f"run_{time.time_ns() // 1_000_000}_" + "".join(
                    secrets.choice(_ALPHABET) for _ in range(6)
                )
                run = VGGTRun(
                    run_id=run_id,
                    settings=settings or VGGTSettings(),
                    backend=backend,
                    presize=presize,
                )
                atomic_write(staging / METADATA, _encode(run))
                try:
                    os.rename(staging, self.runs_dir / run_id)  # fails if the id is taken
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.runs_dir)
        self._index.bump()
        return run

    def load(self, run_id: str) -> VGGTRun:
        """Read a run's metadata; raises RunNotFound, or StorageError when it is corrupt."""
        path = self._existing_dir(run_id) / METADATA
        try:
            raw = _read_no_follow(path)
        except FileNotFoundError:
            raise RunNotFound(f"No such run: {run_id}") from None
        except OSError as exc:
            raise StorageError(f"Run {run_id}: metadata.json cannot be read ({exc})") from None
        try:
            run = VGGTRun.model_validate_json(raw)
        except ValidationError as exc:
            raise StorageError(
                f"Run {run_id}: metadata.json is damaged ({exc.error_count()} problem(s))"
            ) from None
        if run.run_id != run_id:
            raise StorageError(f"Run {run_id}: metadata.json names another run ({run.run_id})")
        return run

    def update(self, run_id: str, fn: Callable[[VGGTRun], VGGTRun | None]) -> VGGTRun:
        """Read, change and write a run under its lock (threads and processes); return it."""
        with self.lock(run_id):
            run = self.load(run_id)
            changed = fn(run)
            run = changed if changed is not None else run
            if run.run_id != run_id:
                raise ValueError("update() must not change the run id")
            self._write(VGGTRun.model_validate(run.model_dump(by_alias=True)))
            return run

    def _write(self, run: VGGTRun) -> None:
        atomic_write(self.runs_dir / run.run_id / METADATA, _encode(run))
        self._index.bump()

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock: one thread of this process and no other process at a time."""
        self.run_dir(run_id)
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(run_id, threading.Lock())
        with thread_lock, FileLock(self._locks_dir / f"{run_id}.lock"):
            yield

    def claim(self, run_id: str) -> FileLock | None:
        """Take the run for one worker (in any process) until `release()`; None if one has it.

        The operating system drops the claim when its process dies, however it dies, so a run
        that is active on disk but claimed by nobody was interrupted.
        """
        self.run_dir(run_id)
        claim = FileLock(self._locks_dir / f"{run_id}.worker", blocking=False)
        try:
            claim.acquire()
        except Timeout:
            return None
        return claim

    def is_claimed(self, run_id: str) -> bool:
        """True while a worker of this or another process holds the run."""
        claim = self.claim(run_id)
        if claim is None:
            return True
        claim.release()
        return False

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Remove what interrupted creates and deletes left behind (hidden, never listed)."""
        cutoff = time.time() - older_than_s
        removed = 0
        trash = self.root / ".trash"
        leftovers = [
            *(trash.iterdir() if trash.is_dir() and not trash.is_symlink() else ()),
            *self.runs_dir.glob(f"{TMP_PREFIX}run.*"),
        ]
        for path in leftovers:
            with contextlib.suppress(OSError):
                # Old enough that no live create or delete (in any process) still owns it.
                if path.lstat().st_mtime < cutoff:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed += 1
        return removed

    def remove_temp_files(self, run_id: str) -> int:
        """Delete what interrupted writes left in a run (`.tmp-` names); return how many."""
        removed = 0
        with self.lock(run_id):
            folder = self._existing_dir(run_id)
            for parent in (folder, folder / IMAGES):
                if parent.is_symlink() or not parent.is_dir():
                    continue
                with os.scandir(parent) as entries:
                    for entry in entries:
                        if entry.name.startswith(TMP_PREFIX) and not entry.is_dir(
                            follow_symlinks=False
                        ):
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(entry.path)
                                removed += 1
        return removed

    # --- images ------------------------------------------------------------------------------

    def add_images(self, run_id: str, files: Iterable[tuple[str, bytes]]) -> list[str]:
        """Check and store images in a queued, unsubmitted run; all or nothing. Return new names."""
        files = list(files)
        problems: list[ImageRejected] = []
        checked: list[tuple[str, bytes]] = []
        for name, data in files:
            try:
                ext = check_image(
                    name,
                    data,
                    max_bytes=self.max_image_bytes,
                    max_pixels=self.max_image_pixels,
                )
                checked.append((safe_image_name(name, ext), data))
            except ImageRejected as exc:
                problems.append(exc)
        with self.lock(run_id):
            run = self.load(run_id)
            if run.status is not RunStatus.queued or run.submitted_at is not None:
                raise RunBusy(f"Run {run_id} was already started; images can no longer be added")
            if len(run.images) + len(files) > self.max_images:
                problems.append(
                    ImageRejected(
                        f"{len(files)} files",
                        f"a run holds at most {self.max_images} images "
                        f"({len(run.images)} already stored)",
                    )
                )
            if problems:
                raise ImagesRejected(problems)
            names = unique_names([n for n, _ in checked], run.images)
            folder = self.run_dir(run_id) / IMAGES
            if folder.is_symlink() or not folder.is_dir():
                raise StorageError(f"Run {run_id}: its images folder is missing or not a folder")
            written: list[Path] = []
            try:
                for name, (_, data) in zip(names, checked, strict=True):
                    target = folder / name
                    atomic_write(target, data)
                    written.append(target)
                run.images = sorted([*run.images, *names])
                self._write(run)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        return names

    # --- artifacts ---------------------------------------------------------------------------

    def save_artifact(self, run_id: str, kind: ArtifactKind, source: Path | bytes) -> Path:
        """Put an artifact in place atomically, from bytes or a file (moved when in the run)."""
        target = self.artifact_path(run_id, kind)
        self._existing_dir(run_id)
        if isinstance(source, bytes):
            atomic_write(target, source)
        elif source.parent.resolve() == target.parent:
            commit_file(source, target)
        else:
            tmp = temp_sibling(target)
            try:
                shutil.copyfile(source, tmp)
                commit_file(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return target

    def temp_path(self, run_id: str, kind: ArtifactKind) -> Path:
        """A fresh temporary name beside an artifact, never mistaken for the artifact itself."""
        return temp_sibling(self.artifact_path(run_id, kind))

    # --- listing -----------------------------------------------------------------------------

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

    # --- delete ------------------------------------------------------------------------------

    def delete_run(self, run_id: str, *, force: bool = False) -> None:
        """Delete a run and its files; an active run is refused unless `force`."""
        with self.lock(run_id):
            path = self.run_dir(run_id)
            if not path.is_dir():
                raise RunNotFound(f"No such run: {run_id}")
            try:
                active = self.load(run_id).is_active
            except StorageError:
                active = False  # a damaged run, or one without metadata, can always be deleted
            if active and not force:
                raise RunBusy(f"Run {run_id} is still running; cancel it before deleting it")
            trash = self.root / ".trash"
            trash.mkdir(exist_ok=True)
            # The rename makes the run vanish at once; a crash during rmtree leaves only trash.
            doomed = trash / f"{run_id}.{secrets.token_hex(4)}"
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            self._index.bump()
        for suffix in (".lock", ".worker"):
            (self._locks_dir / f"{run_id}{suffix}").unlink(missing_ok=True)


def _status_set(status: RunStatus | str | Iterable[RunStatus | str] | None) -> set[str]:
    if status is None:
        return set()
    if isinstance(status, str):
        return {RunStatus(status).value}
    return {RunStatus(s).value for s in status}
