"""Reading the GLB that VGGT writes, fast; preview sampling and PLY export.

The reader parses the GLB container and its JSON itself and maps the binary chunk with numpy:
a 2,000,000-point scene reads in tens of milliseconds, without trimesh's per-geometry work.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "DEFAULT_PREVIEW_POINTS",
    "GLBError",
    "GLBScene",
    "export_ply",
    "parse_glb",
    "preview_figure",
    "read_glb",
    "sample_indices",
]

DEFAULT_PREVIEW_POINTS: Final = 200_000
DEFAULT_POINT_COLOR: Final = (180, 180, 180)  # for points that carry no COLOR_0

_GLB_MAGIC: Final = b"glTF"
_CHUNK_JSON: Final = 0x4E4F534A
_CHUNK_BIN: Final = 0x004E4942
_MODE_POINTS: Final = 0
_MODE_TRIANGLES: Final = 4
_MODE_TRIANGLE_STRIP: Final = 5
_MODE_TRIANGLE_FAN: Final = 6

_COMPONENT_TYPES: Final[dict[int, np.dtype[Any]]] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
_COMPONENT_NAMES: Final = {
    np.dtype("<i1"): "byte",
    np.dtype("<u1"): "unsigned byte",
    np.dtype("<i2"): "short",
    np.dtype("<u2"): "unsigned short",
    np.dtype("<u4"): "unsigned int",
    np.dtype("<f4"): "float",
}
_TYPE_SIZES: Final = {
    "SCALAR": 1,
    "VEC2": 2,
    "VEC3": 3,
    "VEC4": 4,
    "MAT2": 4,
    "MAT3": 9,
    "MAT4": 16,
}

_BACKGROUND: Final = "#0e1117"
_TEXT_COLOR: Final = "#fafafa"
_CAMERA_COLOR: Final = "#ff4b4b"
_PALETTE_BITS: Final = 5
_BLOCK: Final = 1 << 16  # rows per block of elementwise work
# Nodes may instance one mesh many times; a few hundred bytes of JSON could then ask for
# gigabytes. No VGGT result comes near this many vertices (100 frames are ~20 million points).
_MAX_VERTICES: Final = 100_000_000


class GLBError(ValueError):
    """The file is not a GLB this reader understands; the message says why, for a person."""


@dataclass(frozen=True, slots=True, eq=False)
class GLBScene:
    """A GLB's point cloud and camera meshes, in world coordinates (node transforms applied).

    Arrays may be views of the file's bytes (read-only when parsed from `bytes`).
    """

    points: NDArray[np.float32]  # (N, 3)
    colors: NDArray[np.uint8]  # (N, 3) RGB
    cameras: list[tuple[NDArray[np.float32], NDArray[np.int64]]]  # (V, 3) vertices, (F, 3) faces
    file_size: int
    name: str = "GLB"

    @property
    def point_count(self) -> int:
        """Number of points in the cloud."""
        return int(self.points.shape[0])


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_glb(path: str | os.PathLike[str]) -> GLBScene:
    """Read a GLB file; any unreadable or malformed file raises GLBError."""
    p = Path(path)
    name = p.name or str(p)
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(12)
            _check_header(head, size, name)
            buf = np.empty(size, dtype=np.uint8)
            buf[:12] = np.frombuffer(head, dtype=np.uint8)
            got = fh.readinto(memoryview(buf)[12:])
    except FileNotFoundError:
        raise GLBError(f"{name} does not exist ({p})") from None
    except IsADirectoryError:
        raise GLBError(f"{name} is a folder, not a GLB file") from None
    except OSError as exc:
        raise GLBError(f"{name} could not be read: {exc.strerror or exc}") from None
    if got is None or 12 + got != size:
        raise GLBError(f"{name} is truncated: {12 + (got or 0):,} of {size:,} bytes")
    return _parse(buf, name)


def parse_glb(data: bytes | bytearray | memoryview, name: str = "GLB") -> GLBScene:
    """Parse GLB bytes held in memory (arrays are views of `data` where possible)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    _check_header(bytes(buf[:12]), buf.size, name)
    return _parse(buf, name)


def _check_header(head: bytes, size: int, name: str) -> None:
    """Check the 12-byte GLB header against the file's real size."""
    if size == 0:
        raise GLBError(f"{name} is empty (0 bytes)")
    if len(head) >= 4 and head[:4] != _GLB_MAGIC:
        raise GLBError(f"{name} is not a GLB file: it starts with {head[:4]!r}, not b'glTF'")
    if size < 12 or len(head) < 12:
        raise GLBError(f"{name} is too short to be a GLB: {size:,} bytes")
    version, length = struct.unpack_from("<II", head, 4)
    if version != 2:
        raise GLBError(f"{name} is glTF version {version}; only version 2 is supported")
    if length > size:
        raise GLBError(f"{name} is truncated: {size:,} of {length:,} bytes")
    if length < size:
        raise GLBError(f"{name} holds {size:,} bytes but its header says {length:,}")
    if length < 20:
        raise GLBError(f"{name} is too short to be a GLB: {size:,} bytes")


def _parse(buf: NDArray[np.uint8], name: str) -> GLBScene:
    """Parse a whole GLB whose header was checked; turns any slip into GLBError."""
    try:
        return _Reader(buf, name).scene()
    except GLBError:
        raise
    except (IndexError, KeyError, TypeError, ValueError, OverflowError, struct.error) as exc:
        # A backstop: every case we know of is checked explicitly with a clearer message.
        raise GLBError(f"{name} is not a valid GLB ({type(exc).__name__}: {exc})") from exc


@dataclass(slots=True)
class _PointsPart:
    positions: NDArray[np.float32]
    colors: NDArray[Any] | None
    matrix: NDArray[np.float64]


class _Reader:
    """One pass over a GLB held in `buf` (a uint8 array of the whole file)."""

    def __init__(self, buf: NDArray[np.uint8], name: str) -> None:
        self.buf = buf
        self.name = name
        self.size = int(buf.size)
        self.doc: dict[str, Any] = {}
        self.has_bin = False
        self.vertices = 0
        self.bin_start = 0
        self.bin_length = 0
        self._read_chunks()

    def fail(self, message: str) -> GLBError:
        """An error that names the file."""
        return GLBError(f"{self.name} is not a valid GLB: {message}")

    # ---- container ------------------------------------------------------------------------

    def _chunk_header(self, pos: int) -> tuple[int, int]:
        length, kind = struct.unpack_from("<II", self.buf, pos)
        if pos + 8 + length > self.size:
            raise GLBError(
                f"{self.name} is truncated or corrupt: a chunk at byte {pos:,} claims "
                f"{length:,} bytes but only {self.size - pos - 8:,} follow"
            )
        return length, kind

    def _read_chunks(self) -> None:
        length, kind = self._chunk_header(12)
        if kind != _CHUNK_JSON:
            raise self.fail("its first chunk is not the JSON chunk")
        raw = self.buf[20 : 20 + length].tobytes()
        try:
            doc = json.loads(raw.decode("utf-8").rstrip(" \t\r\n\x00"))
        except UnicodeDecodeError:
            raise self.fail("its JSON chunk is not UTF-8 text") from None
        except (ValueError, RecursionError) as exc:
            raise self.fail(f"its JSON chunk does not parse ({exc})") from None
        if not isinstance(doc, dict):
            raise self.fail("its JSON chunk is not an object")
        self.doc = doc
        pos = 20 + length
        while pos < self.size:
            if self.size - pos < 8:
                raise self.fail(f"{self.size - pos} stray bytes follow its last chunk")
            length, kind = self._chunk_header(pos)
            if kind == _CHUNK_BIN and not self.has_bin:
                self.has_bin, self.bin_start, self.bin_length = True, pos + 8, length
            pos += 8 + length

    # ---- JSON access, every value checked ---------------------------------------------------

    def _list(self, key: str) -> list[Any]:
        value = self.doc.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"'{key}' is not a list")
        return value

    def _item(self, key: str, index: Any, where: str) -> dict[str, Any]:
        items = self._list(key)
        if not _is_int(index) or not 0 <= index < len(items):
            raise self.fail(f"{where} refers to {key}[{index!r}], which does not exist")
        item = items[index]
        if not isinstance(item, dict):
            raise self.fail(f"{key}[{index}] is not an object")
        return item

    def _int(self, obj: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
        value = obj.get(key, default)
        if value is None:
            raise self.fail(f"{where} has no '{key}'")
        if not _is_int(value) or value < 0:
            raise self.fail(f"{where} has a bad '{key}' ({value!r})")
        return int(value)

    def _numbers(self, obj: dict[str, Any], key: str, count: int, where: str) -> list[float]:
        value = obj[key]
        if (
            not isinstance(value, list)
            or len(value) != count
            or not all(_is_number(v) and math.isfinite(v) for v in value)
        ):
            raise self.fail(f"{where} has a bad '{key}' (expected {count} finite numbers)")
        return [float(v) for v in value]

    # ---- accessors ------------------------------------------------------------------------

    def accessor(self, index: Any, where: str) -> NDArray[Any]:
        """The accessor's data as a (count, components) view of the binary chunk."""
        what = f"accessor {index}"
        acc = self._item("accessors", index, where)
        if "sparse" in acc:
            raise self.fail(f"{what} is sparse, which this reader does not support")
        ctype = acc.get("componentType")
        dtype = _COMPONENT_TYPES.get(ctype) if _is_int(ctype) else None
        if dtype is None:
            raise self.fail(f"{what} has an unknown component type ({ctype!r})")
        kind = acc.get("type")
        if not isinstance(kind, str) or kind not in _TYPE_SIZES:
            raise self.fail(f"{what} has an unknown type ({kind!r})")
        components = _TYPE_SIZES[kind]
        count = self._int(acc, "count", what)
        if "bufferView" not in acc:
            raise self.fail(f"{what} has no bufferView, which this reader does not support")
        view_index = acc["bufferView"]
        view = self._item("bufferViews", view_index, what)
        view_what = f"bufferView {view_index}"
        self._check_buffer(view.get("buffer"), view_what)
        view_offset = self._int(view, "byteOffset", view_what, default=0)
        view_length = self._int(view, "byteLength", view_what)
        if view_offset + view_length > self.bin_length:
            raise self.fail(
                f"{view_what} spans bytes {view_offset:,}–{view_offset + view_length:,} "
                f"of a binary chunk of {self.bin_length:,} bytes"
            )
        offset = self._int(acc, "byteOffset", what, default=0)
        element = components * dtype.itemsize
        stride = self._int(view, "byteStride", view_what, default=element) or element
        if stride < element:
            raise self.fail(
                f"{view_what} has a byteStride of {stride}, less than {what}'s "
                f"element size of {element} bytes"
            )
        if count == 0:
            return np.zeros((0, components), dtype=dtype)
        end = offset + stride * (count - 1) + element
        if end > view_length:
            raise self.fail(
                f"{what} reads {count:,} elements up to byte {end:,} of {view_what}, "
                f"which holds {view_length:,} bytes"
            )
        start = self.bin_start + view_offset + offset
        if stride == element:
            flat = np.frombuffer(self.buf, dtype=dtype, count=count * components, offset=start)
            return flat.reshape(count, components)
        return np.ndarray(
            (count, components),
            dtype=dtype,
            buffer=self.buf,
            offset=start,
            strides=(stride, dtype.itemsize),
        )

    def _check_buffer(self, index: Any, where: str) -> None:
        buffer = self._item("buffers", index, where)
        if index != 0 or "uri" in buffer:
            raise self.fail(
                f"{where} uses an external buffer; only the GLB's own binary chunk is supported"
            )
        if not self.has_bin:
            raise self.fail(f"{where} needs a binary chunk, and the file has none")

    # ---- nodes and meshes -----------------------------------------------------------------

    def _roots(self) -> list[Any]:
        scenes = self._list("scenes")
        nodes = self._list("nodes")
        if scenes:
            scene_index = self.doc.get("scene", 0)
            scene = self._item("scenes", scene_index, "the default scene")
            roots = scene.get("nodes", [])
            if not isinstance(roots, list):
                raise self.fail(f"scenes[{scene_index}] has a bad 'nodes' list")
            return roots
        children: set[Any] = set()
        for node in nodes:
            if isinstance(node, dict) and isinstance(node.get("children"), list):
                children.update(c for c in node["children"] if _is_int(c))
        return [i for i in range(len(nodes)) if i not in children]

    def _walk(self) -> Iterator[tuple[int, dict[str, Any], NDArray[np.float64]]]:
        """Every node of the scene with its world matrix, parents before children."""
        stack: list[tuple[Any, NDArray[np.float64], str]] = [
            (root, np.eye(4), "the scene") for root in reversed(self._roots())
        ]
        seen: set[int] = set()
        while stack:
            index, parent, where = stack.pop()
            node = self._item("nodes", index, where)
            if index in seen:
                raise self.fail(f"node {index} is reached twice (nodes must form a tree)")
            seen.add(index)
            world = parent @ self._local_matrix(node, f"node {index}")
            yield index, node, world
            children = node.get("children", [])
            if not isinstance(children, list):
                raise self.fail(f"node {index} has a bad 'children' list")
            stack.extend((child, world, f"node {index}") for child in reversed(children))

    def _local_matrix(self, node: dict[str, Any], where: str) -> NDArray[np.float64]:
        if "matrix" in node:
            values = self._numbers(node, "matrix", 16, where)
            return np.array(values, dtype=np.float64).reshape(4, 4).T  # glTF is column-major
        matrix = np.eye(4)
        if "scale" in node:
            matrix[:3, :3] = np.diag(self._numbers(node, "scale", 3, where))
        if "rotation" in node:
            x, y, z, w = self._numbers(node, "rotation", 4, where)
            norm = math.sqrt(x * x + y * y + z * z + w * w)
            if norm == 0.0:
                raise self.fail(f"{where} has a zero rotation quaternion")
            rotation = _quaternion_matrix(x / norm, y / norm, z / norm, w / norm)
            matrix[:3, :3] = rotation @ matrix[:3, :3]
        if "translation" in node:
            matrix[:3, 3] = self._numbers(node, "translation", 3, where)
        return matrix

    def scene(self) -> GLBScene:
        """Collect points and camera meshes of every node instance."""
        points: list[_PointsPart] = []
        cameras: list[tuple[NDArray[np.float32], NDArray[np.int64]]] = []
        for index, node, world in self._walk():
            if "mesh" not in node:
                continue
            mesh_where = f"node {index}"
            mesh = self._item("meshes", node["mesh"], mesh_where)
            primitives = mesh.get("primitives", [])
            if not isinstance(primitives, list):
                raise self.fail(f"mesh {node['mesh']} has a bad 'primitives' list")
            camera_vertices: list[NDArray[np.float32]] = []
            camera_faces: list[NDArray[np.int64]] = []
            base = 0
            for number, primitive in enumerate(primitives):
                where = f"mesh {node['mesh']} primitive {number}"
                if not isinstance(primitive, dict):
                    raise self.fail(f"{where} is not an object")
                attributes = primitive.get("attributes", {})
                if not isinstance(attributes, dict):
                    raise self.fail(f"{where} has bad 'attributes'")
                mode = self._int(primitive, "mode", where, default=_MODE_TRIANGLES)
                if "POSITION" not in attributes:
                    continue
                if mode == _MODE_POINTS:
                    points.append(self._points_part(attributes, world, where))
                    self._count_vertices(points[-1].positions.shape[0])
                elif mode in (_MODE_TRIANGLES, _MODE_TRIANGLE_STRIP, _MODE_TRIANGLE_FAN):
                    vertices = self._positions(attributes, where)
                    self._count_vertices(vertices.shape[0])
                    faces = self._faces(primitive, mode, vertices.shape[0], where)
                    camera_vertices.append(_transform(vertices, world))
                    camera_faces.append(faces + base)
                    base += vertices.shape[0]
                # lines (modes 1-3) are not part of what VGGT writes; they are skipped
            if camera_vertices:
                cameras.append((np.concatenate(camera_vertices), np.concatenate(camera_faces)))
        xyz, rgb = _merge_points(points)
        return GLBScene(
            points=xyz, colors=rgb, cameras=cameras, file_size=self.size, name=self.name
        )

    def _count_vertices(self, count: int) -> None:
        self.vertices += count
        if self.vertices > _MAX_VERTICES:
            raise self.fail(f"its nodes place more than {_MAX_VERTICES:,} vertices")

    def _positions(self, attributes: dict[str, Any], where: str) -> NDArray[np.float32]:
        positions = self.accessor(attributes["POSITION"], f"{where} POSITION")
        if positions.dtype != np.float32 or positions.shape[1] != 3:
            raise self.fail(
                f"{where} has POSITION of {_describe(positions)}; only float VEC3 is supported"
            )
        return positions

    def _points_part(
        self, attributes: dict[str, Any], world: NDArray[np.float64], where: str
    ) -> _PointsPart:
        positions = self._positions(attributes, where)
        colors = None
        if "COLOR_0" in attributes:
            colors = self.accessor(attributes["COLOR_0"], f"{where} COLOR_0")
            if colors.shape[1] not in (3, 4) or colors.dtype not in (
                np.uint8,
                np.uint16,
                np.float32,
            ):
                raise self.fail(
                    f"{where} has COLOR_0 of {_describe(colors)}; expected VEC3 or VEC4 of "
                    "float, unsigned byte or unsigned short"
                )
            if colors.shape[0] != positions.shape[0]:
                raise self.fail(
                    f"{where} has {positions.shape[0]:,} positions but {colors.shape[0]:,} colours"
                )
        return _PointsPart(positions, colors, world)

    def _faces(
        self, primitive: dict[str, Any], mode: int, vertex_count: int, where: str
    ) -> NDArray[np.int64]:
        if "indices" in primitive:
            indices = self.accessor(primitive["indices"], f"{where} indices")
            if indices.shape[1] != 1 or indices.dtype not in (np.uint8, np.uint16, np.uint32):
                raise self.fail(
                    f"{where} has indices of {_describe(indices)}; expected unsigned SCALAR"
                )
            flat = indices.reshape(-1).astype(np.int64)
            if flat.size and int(flat.max()) >= vertex_count:
                raise self.fail(
                    f"{where} has an index {int(flat.max())} past its {vertex_count} vertices"
                )
        else:
            flat = np.arange(vertex_count, dtype=np.int64)
        if mode == _MODE_TRIANGLES:
            if flat.size % 3:
                raise self.fail(f"{where} has {flat.size} triangle indices, not a multiple of 3")
            return flat.reshape(-1, 3)
        if flat.size < 3:
            return np.zeros((0, 3), dtype=np.int64)
        k = np.arange(flat.size - 2)
        if mode == _MODE_TRIANGLE_FAN:
            return np.stack([np.full_like(k, flat[0]), flat[k + 1], flat[k + 2]], axis=1)
        odd = (k % 2).astype(bool)  # strips alternate winding
        first = np.where(odd, flat[k + 1], flat[k])
        second = np.where(odd, flat[k], flat[k + 1])
        return np.stack([first, second, flat[k + 2]], axis=1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(array: NDArray[Any]) -> str:
    """An accessor's element in glTF's words, e.g. "2 × unsigned short"."""
    return f"{array.shape[1]} × {_COMPONENT_NAMES.get(array.dtype, array.dtype.name)}"


def _quaternion_matrix(x: float, y: float, z: float, w: float) -> NDArray[np.float64]:
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


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
    return scaled.astype(np.uint8)


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


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def sample_indices(
    n: int, budget: int = DEFAULT_PREVIEW_POINTS, seed: int = 0
) -> NDArray[np.int64]:
    """Sorted indices of a deterministic random sample of at most `budget` of `n` points."""
    if n < 0 or budget < 0:
        raise ValueError(f"n and budget must not be negative (got n={n}, budget={budget})")
    if n <= budget:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    indices = rng.choice(n, size=budget, replace=False, shuffle=False).astype(np.int64)
    indices.sort()  # ascending indices gather faster and keep the file's order
    return indices


# --------------------------------------------------------------------------------------------
# Preview figure
# --------------------------------------------------------------------------------------------


def _palette(colors: NDArray[np.uint8]) -> tuple[NDArray[np.uint16], int, list[list[Any]]]:
    """Colours as indices into a palette of the 15-bit colours in use: (indices, cmax, scale)."""
    levels = (1 << _PALETTE_BITS) - 1
    q = (colors.astype(np.uint16) * levels + 127) // 255
    code = (q[:, 0] << (2 * _PALETTE_BITS)) | (q[:, 1] << _PALETTE_BITS) | q[:, 2]
    present = np.bincount(code, minlength=1 << (3 * _PALETTE_BITS)) > 0
    used = np.flatnonzero(present)
    index = (np.cumsum(present) - 1).astype(np.uint16)[code]
    r = (used >> (2 * _PALETTE_BITS)) & levels
    g = (used >> _PALETTE_BITS) & levels
    b = used & levels
    rgb = (((r * 255 + 15) // levels) << 16) | (((g * 255 + 15) // levels) << 8)
    rgb |= (b * 255 + 15) // levels
    hexes = [f"#{v:06x}" for v in rgb.tolist()]
    # Index i sits at i / cmax on the scale, and stop i is placed exactly there. cmax is a power
    # of ten so the stops print short ("0.01234", not "0.012340000406..."); both sides compute
    # the same correctly rounded double. A last stop at 1 closes the scale.
    cmax = 10 ** len(str(len(hexes) - 1))
    stops = (np.arange(len(hexes)) / cmax).tolist()
    scale = [[s, h] for s, h in zip(stops, hexes, strict=True)]
    scale.append([1.0, hexes[-1]])
    return index, cmax, scale


def _camera_lines(
    cameras: list[tuple[NDArray[np.float32], NDArray[np.int64]]],
) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """Every camera mesh's edges as line segments separated by None."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    zs: list[float | None] = []
    for vertices, faces in cameras:
        if faces.size == 0:
            continue
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        edges = np.unique(np.sort(edges, axis=1), axis=0)
        for a, b in edges.tolist():
            (xa, ya, za), (xb, yb, zb) = vertices[a].tolist(), vertices[b].tolist()
            xs += [xa, xb, None]
            ys += [ya, yb, None]
            zs += [za, zb, None]
    return xs, ys, zs


def preview_figure(
    scene: GLBScene,
    budget: int = DEFAULT_PREVIEW_POINTS,
    seed: int = 0,
    title: str | None = None,
    point_size: float = 1.5,
) -> go.Figure:
    """A plotly 3D figure of a deterministic sample of the points and the camera wireframes.

    `fig.layout.meta` holds {"shown_points", "total_points", "cameras"} for a "showing N of M" note;
    the default title says the same, and `title=""` leaves it (and its margin) out.
    """
    import plotly.graph_objects as go

    total = scene.point_count
    indices = sample_indices(total, budget, seed)
    shown = int(indices.size)
    if shown == total:
        xyz, rgb = scene.points, scene.colors
    else:
        xyz, rgb = scene.points[indices], scene.colors[indices]
    columns = np.ascontiguousarray(xyz.T)

    traces: list[dict[str, Any]] = []
    if shown:
        codes, cmax, colorscale = _palette(rgb)
        # Colours: per-point "rgb(r,g,b)" strings cost ~6 s through plotly's validators and ~38
        # bytes a point; instead each point carries a uint16 index into a palette of the 15-bit
        # (5 bits a channel, max error 4/255) colours actually used, given as a colorscale whose
        # stop i is colour i. Positions and indices go out as base64 typed arrays (f4, u2). The
        # trace goes in unvalidated because validating a colorscale of up to 32,768 stops alone
        # takes seconds; tests validate the same figure once to prove it is well-formed.
        traces.append(
            {
                "type": "scatter3d",
                "name": "points",
                "mode": "markers",
                "x": columns[0],
                "y": columns[1],
                "z": columns[2],
                "marker": {
                    "size": point_size,
                    "color": codes,
                    "colorscale": colorscale,
                    "cmin": 0,
                    "cmax": cmax,
                    "cauto": False,
                    "showscale": False,
                },
                "hoverinfo": "skip",
                "showlegend": False,
            }
        )
    if title is None:
        cams = len(scene.cameras)
        title = f"Showing {shown:,} of {total:,} points · {cams} camera{'' if cams == 1 else 's'}"
    hidden_axis = {"visible": False, "showspikes": False}
    layout = dict(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 13}},
        paper_bgcolor=_BACKGROUND,
        plot_bgcolor=_BACKGROUND,
        font={"color": _TEXT_COLOR},
        margin={"l": 0, "r": 0, "t": 32 if title else 0, "b": 0},
        showlegend=False,
        uirevision="vggt-preview",  # keep the user's orbit/zoom across Streamlit reruns
        meta={"shown_points": shown, "total_points": total, "cameras": len(scene.cameras)},
        scene={
            "aspectmode": "data",
            "bgcolor": _BACKGROUND,
            "xaxis": dict(hidden_axis),
            "yaxis": dict(hidden_axis),
            "zaxis": dict(hidden_axis),
            "dragmode": "orbit",
            # VGGT's scene is the first camera's frame turned to y-up, looking along +z:
            # start from behind that camera so the preview opens on what it saw.
            "camera": {
                "up": {"x": 0, "y": 1, "z": 0},
                "eye": {"x": 0.0, "y": 0.2, "z": -1.6},
                "center": {"x": 0, "y": 0, "z": 0},
            },
        },
    )
    # Built unvalidated like the points trace (plotly's layout validation costs ~25 ms); the
    # tests validate the whole figure.
    fig = go.Figure(data=traces, layout=layout, _validate=False)
    fig._validate = True  # whatever the caller adds from here on is validated as usual
    if scene.cameras:
        xs, ys, zs = _camera_lines(scene.cameras)
        fig.add_trace(
            go.Scatter3d(
                x=xs,
                y=ys,
                z=zs,
                mode="lines",
                name="cameras",
                line={"color": _CAMERA_COLOR, "width": 2},
                hoverinfo="skip",
                showlegend=False,
            )
        )

    return fig


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

_PLY_DTYPE: Final = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)
_PLY_CHUNK: Final = 1 << 20


def export_ply(scene: GLBScene, dest: str | os.PathLike[str]) -> Path:
    """Write the points as binary little-endian PLY (x, y, z float; red, green, blue uchar).

    Written to a temporary file in the same folder, fsynced, then renamed over `dest`.
    """
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
