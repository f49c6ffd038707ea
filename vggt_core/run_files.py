"""A run's re-rendered versions and prepared exports for RunStore (a mixin): where their files
go, finding them by stored name, and putting a finished version in place."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from ._atomic import commit_file
from .errors import StorageError
from .images import is_plain_name
from .run_index import RunIndex

__all__ = ["EXPORTS", "VERSIONS", "RunFiles"]

VERSIONS = "versions"
EXPORTS = "exports"


class RunFiles:
    """The versions/exports half of RunStore (a mixin): reads `run_dir`, `_existing_dir`,
    `_index` and `_disk`."""

    _index: RunIndex
    run_dir: Callable[[str], Path]
    _existing_dir: Callable[[str], Path]
    _disk: Callable[[str], AbstractContextManager[None]]

    def version_path(self, run_id: str, number: int) -> Path:
        """Where a re-render's GLB goes: `versions/v<number>.glb` in the run (never scene.glb)."""
        if number < 2:
            raise ValueError("version 1 is the reconstruction's scene.glb")
        return self.run_dir(run_id) / VERSIONS / f"v{number}.glb"

    def version_file(self, run_id: str, name: str | None) -> Path | None:
        """A version's GLB by its stored relative name, when it is a regular file in the run."""
        if not name:
            return None
        folder = self.run_dir(run_id)
        path = folder / name
        parts = Path(name).parts
        if len(parts) > 2 or not all(is_plain_name(part) for part in parts):
            return None  # a hand-edited metadata.json must not point outside the run
        if any(p.is_symlink() for p in (path, path.parent)) or not path.is_file():
            return None
        return path

    def exports_dir(self, run_id: str) -> Path:
        """The run's folder of prepared exports (made on first use)."""
        folder = self._existing_dir(run_id) / EXPORTS
        with self._disk(f"prepare run {run_id}'s exports"):
            folder.mkdir(exist_ok=True)
        if folder.is_symlink():
            raise StorageError(f"Run {run_id}: exports/ is a link; delete it first")
        return folder

    def save_version(self, run_id: str, number: int, source: Path) -> str:
        """Move a finished re-render's GLB (on the storage's file system) into place; its name
        relative to the run folder."""
        target = self.version_path(run_id, number)
        self._existing_dir(run_id)
        with self._disk(f"save run {run_id}'s version {number}"):
            target.parent.mkdir(exist_ok=True)
            commit_file(source, target)
        self._index.files_changed(run_id)
        return f"{VERSIONS}/{target.name}"
