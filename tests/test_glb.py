"""vggt_core.glb: the fast GLB reader against trimesh, sampling, the preview figure, PLY export,
and that every malformed file raises GLBError and nothing else."""

from __future__ import annotations

import copy
import io
import json
import os
import struct
from functools import cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import trimesh
from app_fixtures import array_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plotly.tools import return_figure_from_figure_or_data

from vggt_core.glb import (
    GLBError,
    GLBScene,
    export_ply,
    parse_glb,
    preview_figure,
    preview_spec,
    read_glb,
    sample_indices,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# VGGT's alignment (OpenGL axes, turned 180° about y) plus a shift, so nothing is the identity.
ALIGN = np.diag([1.0, -1.0, -1.0, 1.0]) @ trimesh.transformations.rotation_matrix(np.pi, [0, 1, 0])
ALIGN[:3, 3] = [0.5, -1.0, 2.0]


# ---- building GLBs ------------------------------------------------------------------------


def vggt_like_scene(points: int = 500, cameras: int = 3, seed: int = 0) -> trimesh.Scene:
    """A trimesh scene as VGGT's demo builds it: a coloured point cloud, cones, a transform."""
    rng = np.random.default_rng(seed)
    scene = trimesh.Scene()
    vertices = rng.normal(size=(points, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(points, 4), dtype=np.uint8)
    if points:
        scene.add_geometry(trimesh.PointCloud(vertices=vertices, colors=colors))
    for i in range(cameras):
        cone = trimesh.creation.cone(radius=0.05, height=0.08, sections=4)
        cone.apply_translation([0.3 * i, 0.0, 0.0])
        cone.visual.vertex_colors = [255, 40 * i, 0, 255]
        scene.add_geometry(cone)
    scene.apply_transform(ALIGN)
    return scene


@cache
def vggt_like_glb(points: int = 500, cameras: int = 3) -> bytes:
    return vggt_like_scene(points, cameras).export(file_type="glb")


def trimesh_world(data: bytes) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Points, colours and camera vertices as trimesh loads and transforms them."""
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    points, colors, cameras = [], [], []
    for node in scene.graph.nodes_geometry:
        matrix, name = scene.graph[node]
        geometry = scene.geometry[name]
        world = trimesh.transform_points(np.asarray(geometry.vertices), matrix)
        if isinstance(geometry, trimesh.PointCloud):
            points.append(world)
            colors.append(np.asarray(geometry.colors)[:, :3])
        else:
            cameras.append(world)
    return np.concatenate(points), np.concatenate(colors), cameras


def split_glb(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + length])
    bin_length = struct.unpack_from("<I", data, 20 + length)[0]
    return doc, data[28 + length : 28 + length + bin_length]


def make_glb(doc: dict | list | bytes, binary: bytes | None) -> bytes:
    """A GLB container around a JSON document and a binary chunk, padded as the spec says."""
    js = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    chunks = struct.pack("<II", len(js), 0x4E4F534A) + js
    if binary is not None:
        binary += b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def sort_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def points_glb(
    positions: np.ndarray,
    colors: np.ndarray | None,
    nodes: list[dict],
    color_type: int = 5121,
    interleave: bool = False,
    view_offset: int = 0,
) -> bytes:
    """A hand-built GLB with one POINTS mesh; `nodes` reference mesh 0 where they want it."""
    n = positions.shape[0]
    pos = positions.astype("<f4")
    accessors = [{"bufferView": 0, "componentType": 5126, "count": n, "type": "VEC3"}]
    attributes = {"POSITION": 0}
    prefix = b"\xab" * view_offset
    if colors is not None and interleave:
        assert colors.dtype == np.uint8 and colors.shape[1] == 4
        record = np.dtype([("p", "<f4", 3), ("c", "u1", 4)])
        rows = np.empty(n, record)
        rows["p"], rows["c"] = pos, colors
        binary = prefix + rows.tobytes()
        views = [{"buffer": 0, "byteOffset": view_offset, "byteLength": n * 16, "byteStride": 16}]
        accessors.append(
            {
                "bufferView": 0,
                "byteOffset": 12,
                "componentType": 5121,
                "normalized": True,
                "count": n,
                "type": "VEC4",
            }
        )
        attributes["COLOR_0"] = 1
    else:
        binary = prefix + pos.tobytes()
        views = [{"buffer": 0, "byteOffset": view_offset, "byteLength": pos.nbytes}]
        if colors is not None:
            raw = colors.astype({5121: "u1", 5123: "<u2", 5126: "<f4"}[color_type]).tobytes()
            binary += b"\0" * (-len(binary) % 4)
            views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": len(raw)})
            binary += raw
            accessors.append(
                {
                    "bufferView": 1,
                    "componentType": color_type,
                    "normalized": color_type != 5126,
                    "count": n,
                    "type": "VEC4" if colors.shape[1] == 4 else "VEC3",
                }
            )
            attributes["COLOR_0"] = 1
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": nodes,
        "meshes": [{"primitives": [{"attributes": attributes, "mode": 0}]}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary) + (-len(binary) % 4)}],
    }
    return make_glb(doc, binary)


# ---- reading ------------------------------------------------------------------------------


def test_points_colours_and_cameras_match_trimesh() -> None:
    data = vggt_like_glb()
    scene = parse_glb(data, "scene.glb")
    points, colors, cameras = trimesh_world(data)

    assert scene.points.dtype == np.float32 and scene.points.shape == (500, 3)
    assert scene.colors.dtype == np.uint8 and scene.colors.shape == (500, 3)
    assert scene.file_size == len(data)
    np.testing.assert_allclose(sort_rows(scene.points), sort_rows(points), atol=1e-5)
    ours = sort_rows(np.hstack([scene.points.astype(np.float64), scene.colors]))
    theirs = sort_rows(np.hstack([points, colors]))
    np.testing.assert_allclose(ours[:, :3], theirs[:, :3], atol=1e-5)
    np.testing.assert_array_equal(ours[:, 3:], theirs[:, 3:])
    assert len(scene.cameras) == len(cameras) == 3
    ours_cams = sorted(sort_rows(v).tolist() for v, _ in scene.cameras)
    theirs_cams = sorted(sort_rows(v).tolist() for v in cameras)
    np.testing.assert_allclose(np.array(ours_cams), np.array(theirs_cams), atol=1e-5)
    for vertices, faces in scene.cameras:
        assert faces.ndim == 2 and faces.shape[1] == 3
        assert faces.min() >= 0 and faces.max() < len(vertices)


def test_node_transform_is_applied_not_ignored() -> None:
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(500, 3)).astype(np.float32)
    scene = parse_glb(vggt_like_glb())
    expected = trimesh.transform_points(vertices, ALIGN)
    np.testing.assert_allclose(scene.points, expected, atol=1e-5)


def test_read_glb_from_disk_equals_parse(tmp_path: Path) -> None:
    path = tmp_path / "scene.glb"
    path.write_bytes(vggt_like_glb())
    from_disk = read_glb(path)
    in_memory = parse_glb(vggt_like_glb())
    np.testing.assert_array_equal(from_disk.points, in_memory.points)
    np.testing.assert_array_equal(from_disk.colors, in_memory.colors)
    assert from_disk.name == "scene.glb"
    assert from_disk.file_size == path.stat().st_size


def test_nested_nodes_compose_parent_and_child() -> None:
    rng = np.random.default_rng(1)
    parent = trimesh.transformations.rotation_matrix(0.5, [1, 0, 0])
    parent[:3, 3] = [1, 0, 0]
    child = trimesh.transformations.rotation_matrix(0.7, [0, 0, 1])
    child[:3, 3] = [0, 2, 0]
    scene = trimesh.Scene()
    scene.graph.update(frame_to="parent", frame_from=scene.graph.base_frame, matrix=parent)
    vertices = rng.normal(size=(50, 3))
    cloud = trimesh.PointCloud(vertices, colors=rng.integers(0, 255, (50, 4), dtype=np.uint8))
    scene.add_geometry(cloud, node_name="cloud", parent_node_name="parent", transform=child)
    cone = trimesh.creation.cone(radius=0.1, height=0.1, sections=4)
    scene.add_geometry(cone, node_name="cam", parent_node_name="parent", transform=child)
    data = scene.export(file_type="glb")
    doc, _ = split_glb(data)
    assert any(node.get("children") for node in doc["nodes"]), "the test needs nesting"

    result = parse_glb(data)
    expected = trimesh.transform_points(vertices, parent @ child)
    np.testing.assert_allclose(result.points, expected, atol=1e-5)
    points, _, cameras = trimesh_world(data)
    np.testing.assert_allclose(sort_rows(result.points), sort_rows(points), atol=1e-5)
    assert len(result.cameras) == len(cameras) == 1
    np.testing.assert_allclose(result.cameras[0][0], cameras[0], atol=1e-5)
    np.testing.assert_allclose(
        result.cameras[0][0], trimesh.transform_points(cone.vertices, parent @ child), atol=1e-5
    )


def test_trs_nodes_nested_three_deep() -> None:
    positions = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, 3]], dtype=np.float32)
    half = np.sqrt(0.5)
    nodes = [
        {"translation": [1.0, 2.0, 3.0], "children": [1]},
        {"rotation": [0.0, 0.0, half, half], "children": [2]},  # 90° about z
        {"scale": [2.0, 3.0, 4.0], "mesh": 0},
    ]
    result = parse_glb(points_glb(positions, None, nodes))
    rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float64)
    expected = (positions * [2, 3, 4]) @ rz.T + [1, 2, 3]
    np.testing.assert_allclose(result.points, expected, atol=1e-6)


def test_trs_on_one_node_is_t_times_r_times_s() -> None:
    positions = np.array([[1, 1, 1], [2, 0, -1]], dtype=np.float32)
    half = np.sqrt(0.5)
    node = {
        "translation": [0.0, 0.0, 5.0],
        "rotation": [half, 0.0, 0.0, half],  # 90° about x
        "scale": [1.0, 2.0, 1.0],
        "mesh": 0,
    }
    result = parse_glb(points_glb(positions, None, [node]))
    rx = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
    expected = (positions * [1, 2, 1]) @ rx.T + [0, 0, 5]
    np.testing.assert_allclose(result.points, expected, atol=1e-6)


def test_column_major_matrix() -> None:
    positions = np.array([[1, 2, 3]], dtype=np.float32)
    matrix = np.eye(4)
    matrix[:3, 3] = [10, 20, 30]
    node = {"matrix": matrix.T.reshape(-1).tolist(), "mesh": 0}  # glTF stores columns
    result = parse_glb(points_glb(positions, None, [node]))
    np.testing.assert_allclose(result.points, [[11, 22, 33]])


def test_interleaved_byte_stride_and_offsets() -> None:
    rng = np.random.default_rng(2)
    positions = rng.normal(size=(64, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(64, 4), dtype=np.uint8)
    data = points_glb(positions, colors, [{"mesh": 0}], interleave=True, view_offset=8)
    result = parse_glb(data)
    np.testing.assert_array_equal(result.points, positions)
    np.testing.assert_array_equal(result.colors, colors[:, :3])
    # The identity transform costs no copy: the points are a view of the file's bytes.
    assert np.shares_memory(result.points, np.frombuffer(data, np.uint8))


@pytest.mark.parametrize(
    ("color_type", "channels"), [(5126, 3), (5126, 4), (5123, 4), (5123, 3), (5121, 3)]
)
def test_colour_kinds(color_type: int, channels: int) -> None:
    rng = np.random.default_rng(3)
    positions = rng.normal(size=(32, 3)).astype(np.float32)
    expected = rng.integers(0, 256, size=(32, 3)).astype(np.uint8)
    if color_type == 5126:
        raw = expected / 255.0
    elif color_type == 5123:
        raw = expected.astype(np.uint32) * 257
    else:
        raw = expected
    if channels == 4:
        raw = np.hstack([raw, np.full((32, 1), raw.max())])
    result = parse_glb(points_glb(positions, raw, [{"mesh": 0}], color_type=color_type))
    np.testing.assert_array_equal(result.colors, expected)


def test_points_without_colour_get_a_default() -> None:
    result = parse_glb(points_glb(np.zeros((5, 3), np.float32), None, [{"mesh": 0}]))
    assert result.colors.shape == (5, 3)
    assert len(np.unique(result.colors, axis=0)) == 1


def test_two_instances_of_one_point_mesh_are_both_read() -> None:
    positions = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    nodes = [{"children": [1, 2]}, {"mesh": 0}, {"mesh": 0, "translation": [0.0, 0.0, 1.0]}]
    result = parse_glb(points_glb(positions, None, nodes))
    np.testing.assert_allclose(result.points, [[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]])


def test_scene_without_points() -> None:
    result = parse_glb(vggt_like_glb(points=0, cameras=2))
    assert result.points.shape == (0, 3)
    assert len(result.cameras) == 2
    fig = preview_figure(result)
    assert [t.mode for t in fig.data] == ["lines"]
    assert fig.layout.meta["total_points"] == 0


# ---- sampling -----------------------------------------------------------------------------


@given(n=st.integers(0, 50_000), budget=st.integers(0, 60_000), seed=st.integers(0, 2**32))
@FUZZ
def test_sample_indices_deterministic_bounded_unique(n: int, budget: int, seed: int) -> None:
    first = sample_indices(n, budget, seed)
    second = sample_indices(n, budget, seed)
    np.testing.assert_array_equal(first, second)
    assert first.size == min(n, budget)
    assert np.all(np.diff(first) > 0)  # sorted and without repeats
    assert first.size == 0 or (first[0] >= 0 and first[-1] < n)


def test_sample_indices_defaults_and_seed() -> None:
    assert sample_indices(2_000_000).size == 200_000
    assert not np.array_equal(sample_indices(1000, 10, 0), sample_indices(1000, 10, 1))
    np.testing.assert_array_equal(sample_indices(5, 10), np.arange(5))
    with pytest.raises(ValueError, match="negative"):
        sample_indices(-1, 10)


# ---- preview figure -----------------------------------------------------------------------


def decoded_colours(trace: go.Scatter3d) -> np.ndarray:
    scale = trace.marker.colorscale
    palette = np.array([[int(c[1 + 2 * i : 3 + 2 * i], 16) for i in range(3)] for _, c in scale])
    codes = np.asarray(trace.marker.color).astype(int)
    cmax = trace.marker.cmax
    # Where index i lands on the colorscale: stop i / cmax, exactly.
    stops = np.array([s for s, _ in scale])
    return palette[np.searchsorted(stops, codes / cmax)]


def test_preview_figure_respects_budget_and_colours() -> None:
    data = vggt_like_glb(points=3000, cameras=4)
    scene = parse_glb(data)
    fig = preview_figure(scene, budget=1000)

    points = [t for t in fig.data if t.mode == "markers"]
    cameras = [t for t in fig.data if t.mode == "lines"]
    assert len(points) == 1 and len(cameras) == 1
    trace = points[0]
    assert len(trace.x) == len(trace.y) == len(trace.z) == len(trace.marker.color) == 1000
    assert fig.layout.meta == {"shown_points": 1000, "total_points": 3000, "cameras": 4}
    assert "1,000 of 3,000" in fig.layout.title.text
    assert fig.layout.scene.aspectmode == "data"
    assert fig.layout.scene.xaxis.visible is False

    idx = sample_indices(3000, 1000)
    np.testing.assert_array_equal(np.asarray(trace.x), scene.points[idx, 0])
    np.testing.assert_array_equal(np.asarray(trace.z), scene.points[idx, 2])
    error = np.abs(decoded_colours(trace) - scene.colors[idx].astype(int))
    assert error.max() <= 5  # 5 bits a channel

    xs = list(cameras[0].x)
    assert xs.count(None) == len(xs) // 3 and xs[2] is None
    # Same figure every call.
    assert preview_figure(scene, budget=1000).to_json() == fig.to_json()


def test_preview_figure_is_valid_plotly_and_streamlit_serializes_it() -> None:
    scene = parse_glb(vggt_like_glb(points=2000))
    fig = preview_figure(scene)
    # The points trace and layout are built unvalidated for speed: prove them valid here.
    go.Figure(fig.to_dict())
    spec = json.loads(
        pio.to_json(return_figure_from_figure_or_data(fig, validate_figure=True), validate=False)
    )
    marker = spec["data"][0]["marker"]
    assert spec["data"][0]["x"]["dtype"] == "f4"
    assert marker["color"]["dtype"] in {"u1", "u2"}
    assert marker["cmin"] == 0 and marker["cmax"] >= len(marker["colorscale"]) - 1
    assert marker["colorscale"][0][0] == 0 and marker["colorscale"][-1][0] == 1
    assert spec["layout"]["meta"]["shown_points"] == 2000
    # Adding to the figure afterwards is validated as usual.
    with pytest.raises(ValueError, match="Invalid property"):
        fig.update_layout(not_a_property=1)


def test_grid_spec_is_valid_plotly_and_maps_back_to_the_points() -> None:
    scene = parse_glb(vggt_like_glb(points=3000, cameras=3))
    spec = preview_spec(scene, budget=1000, grid=4096)
    go.Figure(spec)  # valid as plotly sees it
    meta = spec["layout"]["meta"]
    trace = spec["data"][0]
    assert {trace[a]["dtype"] for a in "xyz"} == {"u2"}  # binary, 2 bytes a value
    grid = np.stack([array_values(trace[a]) for a in "xyz"], axis=1)
    assert grid.min() >= 0 and grid.max() <= 4096
    back = np.asarray(meta["grid_offset"]) + grid * meta["grid_step"]
    idx = sample_indices(3000, 1000)
    # Within half a step of the real points, the same step on every axis.
    assert np.abs(back - scene.points[idx]).max() <= meta["grid_step"] / 2 + 1e-6
    # Each point's colour index names its colour in the scale, within the palette's rounding.
    marker = trace["marker"]
    codes = array_values(marker["color"]).astype(int)
    stops = {round(stop * marker["cmax"]): colour for stop, colour in marker["colorscale"][:-1]}
    shown = np.array([[int(stops[c][i : i + 2], 16) for i in (1, 3, 5)] for c in codes])
    assert np.abs(shown - scene.colors[idx][:, :3].astype(int)).max() <= 5
    assert [t["name"] for t in spec["data"]] == ["points", "cameras"]


def test_a_scene_of_many_colours_gets_a_palette_of_at_most_4096() -> None:
    # Uniformly random colours use all 32,768 of 5 bits a channel: 4 bits a channel are used
    # instead, so the colorscale sent with every rerun stays small.
    rng = np.random.default_rng(7)
    positions = rng.normal(size=(20_000, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(20_000, 4), dtype=np.uint8)
    colors[:, 3] = 255
    scene = parse_glb(points_glb(positions, colors, [{"mesh": 0}]))
    fig = preview_figure(scene, budget=20_000)
    trace = fig.data[0]
    assert 3500 <= len(trace.marker.colorscale) - 1 <= 4096
    error = np.abs(decoded_colours(trace) - scene.colors[:, :3].astype(int))
    assert error.max() <= 9  # 4 bits a channel: half of 255 / 15


def test_empty_title_drops_title_margin() -> None:
    fig = preview_figure(parse_glb(vggt_like_glb()), title="")
    assert fig.layout.margin.t == 0 and not fig.layout.title.text


def test_single_colour_palette() -> None:
    positions = np.random.default_rng(4).normal(size=(10, 3)).astype(np.float32)
    colors = np.tile(np.array([[10, 200, 30, 255]], np.uint8), (10, 1))
    fig = preview_figure(parse_glb(points_glb(positions, colors, [{"mesh": 0}])))
    go.Figure(fig.to_dict())
    # Each channel to the nearest of 32 levels: 10 -> 8, 200 -> 197, 30 -> 33.
    assert {c for _, c in fig.data[0].marker.colorscale} == {"#08c521"}


# ---- PLY export ---------------------------------------------------------------------------


def test_export_ply_round_trips(tmp_path: Path) -> None:
    scene = parse_glb(vggt_like_glb())
    dest = tmp_path / "points.ply"
    dest.write_bytes(b"old content")
    assert export_ply(scene, dest) == dest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.ply"]

    raw = dest.read_bytes()
    assert raw.startswith(b"ply\nformat binary_little_endian 1.0\n")
    header_end = raw.index(b"end_header\n") + len(b"end_header\n")
    assert len(raw) - header_end == 500 * 15
    loaded = trimesh.load(dest)
    assert isinstance(loaded, trimesh.PointCloud)
    np.testing.assert_array_equal(np.asarray(loaded.vertices, np.float32), scene.points)
    np.testing.assert_array_equal(np.asarray(loaded.colors)[:, :3], scene.colors)


def test_export_ply_large_and_empty(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = (1 << 20) + 7  # crosses the writer's block size
    scene = GLBScene(
        points=rng.normal(size=(n, 3)).astype(np.float32),
        colors=rng.integers(0, 256, size=(n, 3), dtype=np.uint8),
        cameras=[],
        file_size=0,
    )
    dest = export_ply(scene, tmp_path / "big.ply")
    raw = dest.read_bytes()
    body = np.frombuffer(
        raw[raw.index(b"end_header\n") + 11 :],
        dtype=[("p", "<f4", 3), ("c", "u1", 3)],
    )
    np.testing.assert_array_equal(body["p"], scene.points)
    np.testing.assert_array_equal(body["c"], scene.colors)

    empty = GLBScene(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), [], 0)
    assert b"element vertex 0\n" in export_ply(empty, tmp_path / "empty.ply").read_bytes()


def test_export_ply_failure_leaves_nothing(tmp_path: Path) -> None:
    bad = GLBScene(np.zeros((3, 3), np.float32), np.zeros((2, 3), np.uint8), [], 0)
    with pytest.raises(ValueError):
        export_ply(bad, tmp_path / "bad.ply")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        export_ply(bad, tmp_path / "missing" / "x.ply")


# ---- malformed input: GLBError and nothing else --------------------------------------------


def parse_or_glberror(data: bytes) -> None:
    try:
        result = parse_glb(data, "scene.glb")
    except GLBError as exc:
        message = str(exc)
        assert message.startswith("scene.glb"), message
        assert "Error:" not in message, f"an unplanned error slipped through: {message}"
        return
    assert isinstance(result, GLBScene)
    assert result.points.shape[0] == result.colors.shape[0]


def test_truncated_at_every_offset() -> None:
    data = vggt_like_glb(points=40, cameras=2)
    for end in range(len(data)):
        with pytest.raises(GLBError):
            parse_glb(data[:end], "scene.glb")


def test_truncated_file_message(tmp_path: Path) -> None:
    data = vggt_like_glb()
    path = tmp_path / "scene.glb"
    path.write_bytes(data[:1024])
    with pytest.raises(GLBError, match=rf"^scene\.glb is truncated: 1,024 of {len(data):,} bytes"):
        read_glb(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"glT", "too short"),
        (b"PK\x03\x04" + b"\0" * 40, "not a GLB file"),
        (struct.pack("<4sII", b"glTF", 1, 12), "version 1"),
        (struct.pack("<4sII", b"glTF", 2, 12), "too short"),
        (struct.pack("<4sII", b"glTF", 2, 10), "header says 10"),
        (struct.pack("<4sIIII", b"glTF", 2, 20, 100, 0x4E4F534A), "claims 100 bytes"),
        (make_glb(b'{"asset": {', None), "does not parse"),
        (make_glb(b"[" * 100_000, None), "does not parse"),
        (make_glb(b'{"a": "\xff"}', None), "not UTF-8"),
        (make_glb([1, 2], None), "not an object"),
    ],
)
def test_container_errors(data: bytes, message: str) -> None:
    with pytest.raises(GLBError, match=message):
        parse_glb(data, "scene.glb")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(GLBError, match="does not exist"):
        read_glb(tmp_path / "nope.glb")
    with pytest.raises(GLBError, match="folder"):
        read_glb(tmp_path)
    (tmp_path / "empty.glb").write_bytes(b"")
    with pytest.raises(GLBError, match="empty"):
        read_glb(tmp_path / "empty.glb")


def rewrite(data: bytes, change) -> bytes:
    doc, binary = split_glb(data)
    change(doc)
    return make_glb(doc, binary)


def _set(path: str, value: object):
    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("accessors.0.count", 10**9, "accessor 0 reads 1,000,000,000 elements"),
        ("accessors.0.byteOffset", 10**6, "accessor 0 reads"),
        ("bufferViews.0.byteLength", 10**9, "bufferView 0 spans"),
        ("bufferViews.0.byteStride", 4, "byteStride of 4"),
        ("accessors.0.componentType", 5124, "unknown component type"),
        ("accessors.0.componentType", 5123, "only float VEC3"),
        ("accessors.0.type", "MAT5", "unknown type"),
        ("accessors.0.count", -1, "bad 'count'"),
        ("accessors.0.count", "12", "bad 'count'"),
        ("accessors.0.sparse", {"count": 1}, "sparse"),
        ("accessors.0.bufferView", _DELETE, "no bufferView"),
        ("accessors.1.type", "VEC2", "COLOR_0 of 2"),
        ("accessors.2.componentType", 5126, "indices of"),
        ("buffers.0.uri", "scene.bin", "external buffer"),
        ("meshes.0.primitives.0.attributes.POSITION", 99, "accessors\\[99\\]"),
        ("nodes.0.mesh", 42, "meshes\\[42\\]"),
        ("nodes.0.matrix", [1, 2, 3], "bad 'matrix'"),
        ("nodes.0.matrix", [float("nan")] * 16, "bad 'matrix'"),
        ("nodes.0.children", [0], "reached twice"),
        ("nodes.0.children", "x", "bad 'children'"),
        ("scenes.0.nodes", [7], "nodes\\[7\\]"),
        ("scene", 3, "scenes\\[3\\]"),
        ("accessors", {}, "'accessors' is not a list"),
        ("meshes.0.primitives", 5, "bad 'primitives'"),
    ],
)
def test_document_errors(path: str, value: object, message: str) -> None:
    data = rewrite(vggt_like_glb(points=40, cameras=2), _set(path, value))
    with pytest.raises(GLBError, match=message) as info:
        parse_glb(data, "scene.glb")
    assert str(info.value).startswith("scene.glb")


def test_index_past_vertices_and_count_mismatch() -> None:
    data = vggt_like_glb(points=40, cameras=2)
    doc, binary = split_glb(data)
    indices = doc["meshes"][1]["primitives"][0]["indices"]
    view = doc["bufferViews"][doc["accessors"][indices]["bufferView"]]
    start = view.get("byteOffset", 0)
    patched = bytearray(binary)
    patched[start : start + 4] = struct.pack("<I", 10_000)
    with pytest.raises(GLBError, match="index 10000 past"):
        parse_glb(make_glb(doc, bytes(patched)), "scene.glb")
    doc["accessors"][1]["count"] = 39
    with pytest.raises(GLBError, match="40 positions but 39 colours"):
        parse_glb(make_glb(doc, binary), "scene.glb")


def test_instancing_bomb_is_refused() -> None:
    positions = np.zeros((100_000, 3), np.float32)
    nodes = [{"children": list(range(1, 1002))}] + [{"mesh": 0}] * 1001
    with pytest.raises(GLBError, match="more than 100,000,000 vertices"):
        parse_glb(points_glb(positions, None, nodes), "scene.glb")


def test_no_binary_chunk() -> None:
    doc, _ = split_glb(vggt_like_glb(points=40))
    with pytest.raises(GLBError, match="the file has none"):
        parse_glb(make_glb(doc, None), "scene.glb")


@given(st.binary(max_size=400))
@FUZZ
def test_random_bytes(data: bytes) -> None:
    parse_or_glberror(data)


@given(st.binary(max_size=400))
@FUZZ
def test_random_bytes_after_a_valid_header(body: bytes) -> None:
    parse_or_glberror(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)


@given(position=st.integers(0, 10**9), mask=st.integers(1, 255))
@FUZZ
def test_flipped_byte(position: int, mask: int) -> None:
    data = bytearray(vggt_like_glb(points=40, cameras=2))
    data[position % len(data)] ^= mask
    parse_or_glberror(bytes(data))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.sampled_from([0, 1, 2, 3, 4, 5, 6, 5121, 5123, 5125, 5126, "VEC3", "SCALAR"])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _leaf_paths(value: object, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _leaf_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            paths += _leaf_paths(item, (*prefix, i))
    return paths


@cache
def _fuzz_base() -> tuple[dict, bytes, list[tuple]]:
    doc, binary = split_glb(vggt_like_glb(points=40, cameras=2))
    return doc, binary, [p for p in _leaf_paths(doc) if p]


@given(data=st.data())
@FUZZ
def test_json_mutations(data: st.DataObject) -> None:
    base, binary, paths = _fuzz_base()
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        target = doc
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = data.draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape under this path
    parse_or_glberror(make_glb(doc, binary))


def test_no_stray_warnings_from_garbage_numbers() -> None:
    positions = np.array([[3e38, -3e38, 3e38]], dtype=np.float32)
    node = {"matrix": (np.eye(4) * 1e30).reshape(-1).tolist(), "mesh": 0}
    with np.errstate(all="raise"):
        result = parse_glb(points_glb(positions, None, [node]))
    assert result.points.shape == (1, 3)
    assert not np.isfinite(result.points).all()  # infinite after the transform


def test_read_glb_accepts_os_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "s.glb"
    path.write_bytes(vggt_like_glb())
    assert read_glb(os.fspath(path)).point_count == 500
