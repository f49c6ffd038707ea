"""The GLBScene a GLB reads into, GLBError, and point parts placed in world coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

DEFAULT_POINT_COLOR: Final = (180, 180, 180)  # for points that carry no COLOR_0
_BLOCK: Final = 1 << 16  # rows per block of elementwise work


class GLBError(ValueError):
    """The file is not a GLB this reader understands; the message says why, for a person."""


@dataclass(frozen=True, slots=True, eq=False)
class GLBScene:
    """A GLB's point cloud and camera meshes in world coordinates (node transforms applied);
    arrays may be views of the file's bytes (read-only when parsed from `bytes`)."""

    points: NDArray[np.float32]  # (N, 3)
    colors: NDArray[np.uint8]  # (N, 3) RGB
    cameras: list[tuple[NDArray[np.float32], NDArray[np.int64]]]  # (V, 3) vertices, (F, 3) faces
    file_size: int
    name: str = "GLB"

    @property
    def point_count(self) -> int:
        """Number of points in the cloud."""
        return int(self.points.shape[0])


@dataclass(slots=True)
class _PointsPart:
    """One POINTS primitive: its positions, its COLOR_0 (if any) and its node's world matrix."""

    positions: NDArray[np.float32]
    colors: NDArray[Any] | None
    matrix: NDArray[np.float64]


def _transform(
    positions: NDArray[np.float32],
    matrix: NDArray[np.float64],
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Positions moved by an affine matrix; the input itself when the matrix is the identity."""
    if out is None:
        if np.array_equal(matrix, np.eye(4)):
            return positions
        out = np.empty(positions.shape, dtype=np.float32)
    rotation = matrix[:3, :3].astype(np.float32)
    shift = matrix[:3, 3].astype(np.float32)
    # Plain elementwise work in cache-sized blocks, not matmul: OpenBLAS's threads spin-wait and
    # slow down 20-fold on a busy 2-core host, and a whole-array expression needs 24 MB of temps.
    scratch = np.empty(min(positions.shape[0], _BLOCK), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, positions.shape[0], _BLOCK):
            block = positions[start : start + _BLOCK]
            target = out[start : start + _BLOCK]
            tmp = scratch[: block.shape[0]]
            for row in range(3):
                column = target[:, row]
                np.multiply(block[:, 0], rotation[row, 0], out=column)
                np.multiply(block[:, 1], rotation[row, 1], out=tmp)
                column += tmp
                np.multiply(block[:, 2], rotation[row, 2], out=tmp)
                column += tmp
                column += shift[row]
    return out


def _rgb8(colors: NDArray[Any] | None, count: int) -> NDArray[np.uint8]:
    """COLOR_0 of any supported kind as uint8 RGB (a view for uint8 input)."""
    if colors is None:
        return np.broadcast_to(np.array(DEFAULT_POINT_COLOR, dtype=np.uint8), (count, 3))
    rgb = colors[:, :3]
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype == np.uint16:
        return ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    scaled = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0) * 255.0 + 0.5
    return np.asarray(scaled, dtype=np.uint8)


def _merge_points(parts: list[_PointsPart]) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """All POINTS primitives as one array of world positions and one of RGB colours."""
    if not parts:
        return np.zeros((0, 3), dtype=np.float32), np.zeros((0, 3), dtype=np.uint8)
    if len(parts) == 1:
        part = parts[0]
        xyz = _transform(part.positions, part.matrix)
        rgb = _rgb8(part.colors, xyz.shape[0])
        if xyz is not part.positions:
            # The positions were copied anyway, so copy the 3 bytes a point of colour too and let
            # the whole file's buffer go: a kept scene then holds 15 bytes a point, not 16 + 12.
            rgb = np.ascontiguousarray(rgb)
        return xyz, rgb
    total = sum(part.positions.shape[0] for part in parts)
    xyz = np.empty((total, 3), dtype=np.float32)
    rgb = np.empty((total, 3), dtype=np.uint8)
    start = 0
    for part in parts:
        end = start + part.positions.shape[0]
        if np.array_equal(part.matrix, np.eye(4)):
            xyz[start:end] = part.positions
        else:
            _transform(part.positions, part.matrix, out=xyz[start:end])
        rgb[start:end] = _rgb8(part.colors, end - start)
        start = end
    return xyz, rgb
