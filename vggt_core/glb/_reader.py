"""Parsing GLB files and bytes: the container, the glTF JSON, accessors and the node tree."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TypeGuard

import numpy as np
from numpy.typing import NDArray

from ._scene import GLBError, GLBScene, _merge_points, _PointsPart, _transform

# The reader parses the GLB container and its JSON itself and maps the binary chunk with numpy:
# a 2,000,000-point scene reads in tens of milliseconds, without trimesh's per-geometry work.

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

# Nodes may instance one mesh many times; a few hundred bytes of JSON could then ask for
# gigabytes. No VGGT result comes near this many vertices (100 frames are ~20 million points).
_MAX_VERTICES: Final = 100_000_000


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
            got = fh.readinto(buf[12:].data)
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
        length, kind = struct.unpack_from("<II", self.buf.data, pos)
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


def _is_int(value: Any) -> TypeGuard[int]:
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
