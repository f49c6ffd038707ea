"""RunStore: the on-disk layout of runs, atomic metadata and artifacts, images; listing and
versions/exports are its mixins (listing.py, run_files.py)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from pydantic import ValidationError

from ._atomic import TMP_PREFIX, atomic_write, commit_file, fsync_dir, temp_sibling
from .errors import (
    ImageRejected,
    ImagesRejected,
    InvalidRunId,
    LockTimeout,
    RunBusy,
    RunNotFound,
    StorageError,
    storage_error,
)
from .images import check_image, is_plain_name, safe_image_name, unique_names
from .listing import BrokenRun, RunListing, RunPage, is_valid_run_id
from .models import RunStatus, VGGTRun, VGGTSettings, describe_validation_error
from .run_files import VERSIONS, RunFiles
from .run_index import RunIndex, RunSummary

__all__ = [
    "ARTIFACT_FILES",
    "LOCK_TIMEOUT_S",
    "ArtifactKind",
    "BrokenRun",
    "RunPage",
    "RunStore",
    "is_valid_run_id",
]

ArtifactKind = Literal["glb", "predictions"]
ARTIFACT_FILES: dict[str, str] = {"glb": "scene.glb", "predictions": "predictions.npz"}
METADATA = "metadata.json"
IMAGES = "images"
VIDEO = "video"
STAGING = ".staging"
# A metadata read-modify-write takes milliseconds; a lock held this long means a stuck process.
LOCK_TIMEOUT_S = 30.0
# A worker's claim is tried this long: a sweep's probe of the claim holds it for microseconds.
CLAIM_WAIT_S = 2.0
_ALPHABET = string.ascii_lowercase + string.digits


def _encode(run: VGGTRun) -> bytes:
    data = run.to_json_dict()
    # Models built with model_copy(update=…) or an instance passed in skip validation: what is
    # written must load again, so it is validated here, where every write passes.
    try:
        VGGTRun.model_validate(data)
    except ValidationError as exc:
        raise StorageError(
            f"Run {run.run_id} was not saved: {describe_validation_error(exc)}"
        ) from None
    return json.dumps(data, indent=2, ensure_ascii=False).encode()


def _read_no_follow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


class RunStore(RunListing, RunFiles):
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
        self._staging_dir = self.root / STAGING
        with self._disk(f"use the storage folder {self.root}"):
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._staging_dir.mkdir(exist_ok=True)
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self._thread_locks: dict[str, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()
        self._index = RunIndex(self.root, self.runs_dir)

    # A static method, not a module function, so that the mixins reach it as `self._disk`.
    @staticmethod
    @contextlib.contextmanager
    def _disk(doing: str) -> Iterator[None]:
        """Turn a raw OSError into a StorageError in plain words ("the disk is full")."""
        try:
            yield
        except Timeout:
            raise  # filelock's Timeout is an OSError too; callers turn it into their own words
        except OSError as exc:
            raise storage_error(exc, doing) from exc

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
        images: Sequence[tuple[str, bytes]] = (),
        video_file: tuple[str, bytes | Path] | None = None,
        **extra: object,
    ) -> VGGTRun:
        """Create a `queued` run with these settings (and images, checked first) and return it.

        `video_file` (a plain file name and its bytes or path) is kept as `video/<name>` in the same
        build. The run appears whole or not at all: a crash never leaves a run without its images.
        """
        checked = self._check_batch(images, []) if images else []
        if video_file is not None and not is_plain_name(video_file[0]):
            raise ValueError(f"not a plain file name: {video_file[0][:80]!r}")
        with self._disk("create the run"):
            run = self._build_run(
                settings or VGGTSettings(), backend, presize, checked, extra, video_file
            )
        return run

    def _build_run(
        self,
        settings: VGGTSettings,
        backend: str | None,
        presize: bool,
        images: list[tuple[str, bytes]],
        extra: Mapping[str, object],
        video_file: tuple[str, bytes | Path] | None = None,
    ) -> VGGTRun:
        # The folder is built under a hidden name and renamed into place whole: a crash half-way
        # must not leave a run folder without metadata, which the listing would call broken.
        dir_before = self._index.runs_dir_mtime()
        staging = self.runs_dir / f"{TMP_PREFIX}run.{os.getpid()}.{secrets.token_hex(8)}"
        (staging / IMAGES).mkdir(parents=True)
        try:
            for name, data in images:
                (staging / IMAGES / name).write_bytes(data)
            if video_file is not None:
                (staging / VIDEO).mkdir()
                name, source = video_file
                if isinstance(source, bytes):
                    (staging / VIDEO / name).write_bytes(source)
                else:
                    shutil.copyfile(source, staging / VIDEO / name)
            while True:
                run_id = f"run_{time.time_ns() // 1_000_000}_" + "".join(
                    secrets.choice(_ALPHABET) for _ in range(6)
                )
                run = VGGTRun(
                    run_id=run_id,
                    settings=settings,
                    backend=backend,
                    presize=presize,
                    images=sorted(name for name, _ in images),
                    **extra,  # checked by _encode, as every write is
                )
                # Not fsynced, like the images beside it: the click waits for no flush; the one
                # step that must be durable is the folder's rename below (fsync of runs/).
                atomic_write(staging / METADATA, _encode(run), durable=False)
                try:
                    os.rename(staging, self.runs_dir / run_id)  # fails if the id is taken
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.runs_dir)
        self._index.record(run.run_id, _summary(run), dir_before=dir_before)
        return run

    def load(self, run_id: str) -> VGGTRun:
        """Read a run's metadata; raises RunNotFound, or StorageError when it is corrupt."""
        path = self._existing_dir(run_id) / METADATA
        try:
            raw = _read_no_follow(path)
        except FileNotFoundError:
            raise RunNotFound(f"No such run: {run_id}") from None
        except OSError as exc:
            raise storage_error(exc, f"read run {run_id}'s metadata.json") from None
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
            self._write(run)
            return run

    def _write(self, run: VGGTRun) -> None:
        data = _encode(run)
        with self._disk(f"save run {run.run_id}"):
            # The temporary file lives in staging: a writer killed mid-write leaves nothing in
            # the run, and sweep() knows the leftover by its pid.
            atomic_write(self.runs_dir / run.run_id / METADATA, data, tmp_dir=self._staging_dir)
        self._index.record(run.run_id, _summary(run))

    @contextlib.contextmanager
    def lock(self, run_id: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the run's lock (one thread of one process at a time), waiting at most `timeout`."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            raise RunNotFound(f"No such run: {run_id}")
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(run_id, threading.Lock())
        busy = LockTimeout(
            f"Run {run_id} stayed locked by another thread or process for {timeout:g} s; "
            "try again (a stuck process may hold it)."
        )
        if not thread_lock.acquire(timeout=timeout):
            raise busy
        try:
            file_lock = FileLock(folder / ".lock", timeout=timeout)
            try:
                with self._disk(f"lock run {run_id}"):
                    file_lock.acquire()
            except Timeout:
                raise busy from None
            _gone_after_lock(folder, file_lock, run_id)
            try:
                yield
            finally:
                file_lock.release()
        finally:
            thread_lock.release()

    def claim(self, run_id: str, wait_s: float = CLAIM_WAIT_S) -> FileLock | None:
        """Take the run for one worker (in any process) until `release()`; None if one has it.

        The operating system drops the claim when its process dies, however it dies, so a run
        that is active on disk but claimed by nobody was interrupted.
        """
        folder = self._existing_dir(run_id)
        claim = FileLock(folder / ".worker", timeout=wait_s)
        try:
            with self._disk(f"claim run {run_id}"):
                claim.acquire()
        except Timeout:
            return None
        _gone_after_lock(folder, claim, run_id)
        return claim

    def is_claimed(self, run_id: str) -> bool:
        """True while a worker of this or another process holds the run."""
        claim = self.claim(run_id, wait_s=0)
        if claim is None:
            return True
        claim.release()
        return False

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Remove what interrupted creates, deletes, image adds and uploads left (never listed).

        A leftover goes once the process that made it is gone (its pid is in the name), or
        after `older_than_s` whatever it says; an upload's staging once its run is not claimed.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        trash = self.root / ".trash"
        leftovers = [
            *(trash.iterdir() if trash.is_dir() and not trash.is_symlink() else ()),
            *self.runs_dir.glob(f"{TMP_PREFIX}run.*"),
            *self._staging_dir.glob("add.*"),
            *self._staging_dir.glob("tmp.*"),
        ]
        for path in leftovers:
            with contextlib.suppress(OSError):
                if _owner_gone(path.name) or path.lstat().st_mtime < cutoff:
                    _remove(path)
                    removed += 1
        for path in self._staging_dir.glob("run_*"):
            run_id = path.name.split(".", 1)[0]
            # An upload's staging lives while its run's worker holds the claim.
            if not (is_valid_run_id(run_id) and self._claimed(run_id)):
                with contextlib.suppress(OSError):
                    _remove(path)
                    removed += 1
        return removed

    def _claimed(self, run_id: str) -> bool:
        try:
            return self.is_claimed(run_id)
        except StorageError:
            return False

    @contextlib.contextmanager
    def staging(self, run_id: str) -> Iterator[Path]:
        """A private folder inside the storage root for one upload, removed afterwards.

        Inside the root, staged copies can be hard links of the stored images, and what a killed
        worker left is found by `sweep()`.
        """
        self._existing_dir(run_id)
        with self._disk(f"prepare run {run_id}'s upload"):
            folder = self._staging_dir / f"{run_id}.{secrets.token_hex(4)}"
            folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def remove_temp_files(self, run_id: str) -> int:
        """Delete what interrupted writes left in a run (`.tmp-` names); return how many."""
        removed = 0
        with self.lock(run_id):
            folder = self._existing_dir(run_id)
            for parent in (folder, folder / IMAGES, folder / VERSIONS):
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
        # No index write here: on a full disk the room just freed is for the metadata write
        # that follows, and that write recounts the run's bytes anyway.
        return removed

    # --- images ------------------------------------------------------------------------------

    def _check_batch(
        self, files: Sequence[tuple[str, bytes]], stored: list[str]
    ) -> list[tuple[str, bytes]]:
        """Every file checked, with its safe unique name; ImagesRejected names each bad one."""
        problems: list[ImageRejected] = []
        checked: list[tuple[str, bytes]] = []
        for name, data in files:
            try:
                ext = check_image(
                    name, data, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
                )
                checked.append((safe_image_name(name, ext), data))
            except ImageRejected as exc:
                problems.append(exc)
        if len(stored) + len(files) > self.max_images:
            problems.append(
                ImageRejected(
                    f"{len(files)} files",
                    f"a run holds at most {self.max_images} images ({len(stored)} already stored)",
                )
            )
        if problems:
            raise ImagesRejected(problems)
        names = unique_names([n for n, _ in checked], stored)
        return [(n, data) for n, (_, data) in zip(names, checked, strict=True)]

    def add_images(self, run_id: str, files: Iterable[tuple[str, bytes]]) -> list[str]:
        """Check and store images in a queued, unsubmitted run; all or nothing. Return new names."""
        files = list(files)
        with self.lock(run_id):
            run = self.load(run_id)
            if run.status is not RunStatus.queued or run.submitted_at is not None:
                raise RunBusy(f"Run {run_id} was already started; images can no longer be added")
            checked = self._check_batch(files, run.images)
            names = [name for name, _ in checked]
            folder = self.run_dir(run_id) / IMAGES
            if folder.is_symlink() or not folder.is_dir():
                raise StorageError(f"Run {run_id}: its images folder is missing or not a folder")
            with self._disk(f"store the images of run {run_id}"):
                self._write_images(run, folder, names, [data for _, data in checked])
        return names

    def _write_images(
        self, run: VGGTRun, folder: Path, names: list[str], blobs: list[bytes]
    ) -> None:
        # Written in a staging folder, then renamed in: a process killed while writing leaves
        # only staging, which sweep() removes, never a stray file inside the run.
        staging = self._staging_dir / f"add.{os.getpid()}.{secrets.token_hex(4)}"
        placed: list[Path] = []
        try:
            staging.mkdir(parents=True)
            for name, data in zip(names, blobs, strict=True):
                (staging / name).write_bytes(data)
            for name in names:
                os.replace(staging / name, folder / name)
                placed.append(folder / name)
            fsync_dir(folder)
            run.images = sorted([*run.images, *names])
            self._write(run)
        except BaseException:
            for path in placed:
                path.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- artifacts ---------------------------------------------------------------------------

    def save_artifact(self, run_id: str, kind: ArtifactKind, source: Path | bytes) -> Path:
        """Put an artifact in place atomically, from bytes or a file (moved when in the run)."""
        target = self.artifact_path(run_id, kind)
        self._existing_dir(run_id)
        with self._disk(f"save run {run_id}'s {target.name}"):
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
        self._index.files_changed(run_id)
        return target

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
            # The rename makes the run vanish at once; a crash during rmtree leaves only trash.
            doomed = trash / f"{run_id}.{os.getpid()}.{secrets.token_hex(4)}"
            with self._disk(f"delete run {run_id}"):
                trash.mkdir(exist_ok=True)
                dir_before = self._index.runs_dir_mtime()
                os.replace(path, doomed)
            self._index.forget(run_id, dir_before=dir_before)
            shutil.rmtree(doomed, ignore_errors=True)


def _summary(run: VGGTRun) -> RunSummary:
    return RunSummary(run.status.value, tuple(name.lower() for name in run.images))


LOCK_FILES = frozenset({".lock", ".worker"})


def _gone_after_lock(folder: Path, lock: FileLock, run_id: str) -> None:
    """Raise RunNotFound when the run was deleted while its lock was taken.

    filelock makes the lock file's folder, so a lock racing a delete would bring back an empty
    run folder that reads as a damaged run; it is removed again instead.
    """
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        names = set()
    if names - LOCK_FILES:
        return
    lock.release()
    for name in LOCK_FILES:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
    raise RunNotFound(f"No such run: {run_id}")


def _owner_gone(name: str) -> bool:
    """True when the pid in a leftover's name (`<prefix>.<pid>.<random>`) is not a live process."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # an older name without a pid: only its age tells
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, under another user
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
