"""Exporting a GLBScene's points, as binary PLY."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

import numpy as np

from ._scene import GLBScene

_PLY_DTYPE: Final = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)
_PLY_CHUNK: Final = 1 << 20


def export_ply(scene: GLBScene, dest: str | os.PathLike[str]) -> Path:
    """Write the points as binary little-endian PLY (x, y, z float; red, green, blue uchar),
    to a temporary file in the same folder, fsynced, then renamed over `dest`."""
    target = Path(dest)
    count = scene.point_count
    header = (
        "ply\n"
        "format binary_little_endian 1.0\n"
        "comment written by VGGT Studio\n"
        f"element vertex {count}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    ).encode("ascii")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide the export from others
            fh.write(header)
            records = np.empty(min(count, _PLY_CHUNK), dtype=_PLY_DTYPE)
            for start in range(0, count, _PLY_CHUNK):
                end = min(count, start + _PLY_CHUNK)
                chunk = records[: end - start]
                for axis, field in enumerate(("x", "y", "z")):
                    chunk[field] = scene.points[start:end, axis]
                for channel, field in enumerate(("red", "green", "blue")):
                    chunk[field] = scene.colors[start:end, channel]
                fh.write(chunk.data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform can open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
