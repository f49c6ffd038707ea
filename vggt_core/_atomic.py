"""Atomic files: written under a temporary name beside the target, then renamed into place."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["TMP_PREFIX", "atomic_write", "commit_file", "fsync_dir", "temp_sibling"]

TMP_PREFIX = ".tmp-"


def temp_sibling(path: Path) -> Path:
    """A fresh hidden name beside `path` that listing, artifacts and recovery know as temporary."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp: Path, path: Path, *, durable: bool = True) -> None:
    """Put a fully written `tmp` at `path` in one step (made durable first unless told not to)."""
    if durable:
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def atomic_write(
    path: Path, data: bytes, *, durable: bool = True, tmp_dir: Path | None = None
) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one, never half.

    Nothing is left behind on failure. The temporary file is made in `tmp_dir` (same file
    system) when given, named `tmp.<pid>.<random>` so a sweep knows a killed writer's leftover;
    beside `path` otherwise. A cache may pass `durable=False`: losing it costs a rebuild.
    """
    if tmp_dir is None:
        tmp = temp_sibling(path)
    else:
        tmp = tmp_dir / f"tmp.{os.getpid()}.{secrets.token_hex(6)}"
    try:
        tmp.write_bytes(data)
        commit_file(tmp, path, durable=durable)
    finally:
        tmp.unlink(missing_ok=True)
