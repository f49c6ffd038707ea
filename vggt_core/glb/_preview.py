"""A deterministic point sample and the plotly 3D preview figure of a GLBScene."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from ._scene import GLBScene

if TYPE_CHECKING:
    import plotly.graph_objects as go

DEFAULT_PREVIEW_POINTS: Final = 200_000

_BACKGROUND: Final = "#0e1117"
_TEXT_COLOR: Final = "#fafafa"
_CAMERA_COLOR: Final = "#ff4b4b"
# The colorscale is sent with every rerun (~20 bytes a colour): 32,768 colours of 5 bits a
# channel would be 650 kB; a scene with more than 4,096 of them is drawn with 4 bits a channel.
_PALETTE_BITS: Final = (5, 4)
_MAX_PALETTE: Final = 4096


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


def _palette(colors: NDArray[np.uint8]) -> tuple[NDArray[np.uint16], int, list[list[Any]]]:
    """Colours as indices into a palette of the colours in use: (indices, cmax, scale). 5 bits a
    channel, or 4 when that would take more than _MAX_PALETTE colours."""
    for bits in _PALETTE_BITS:
        levels = (1 << bits) - 1
        q = (colors[:, :3].astype(np.uint16) * levels + 127) // 255
        code = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
        present = np.bincount(code, minlength=1 << (3 * bits)) > 0
        if np.count_nonzero(present) <= _MAX_PALETTE:
            break
    used = np.flatnonzero(present)
    index = (np.cumsum(present) - 1).astype(np.uint16)[code]
    r = (used >> (2 * bits)) & levels
    g = (used >> bits) & levels
    b = used & levels
    half = levels // 2
    rgb = (((r * 255 + half) // levels) << 16) | (((g * 255 + half) // levels) << 8)
    rgb |= (b * 255 + half) // levels
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


def _grid_transform(
    scene: GLBScene, xyz: NDArray[np.float32], grid: int
) -> tuple[NDArray[np.float64], float]:
    """The offset and step that put the scene (points and cameras) on an integer grid of `grid`
    steps along its largest extent, so one step is the same length on every axis."""
    parts = [xyz.astype(np.float64)] + [v.astype(np.float64) for v, _ in scene.cameras]
    parts = [p for p in parts if p.size]
    if not parts:
        return np.zeros(3), 1.0
    low = np.min([p.min(axis=0) for p in parts], axis=0)
    high = np.max([p.max(axis=0) for p in parts], axis=0)
    extent = float(np.max(high - low))
    return low, (extent / grid if extent > 0 else 1.0)


def _on_grid(values: NDArray[Any], offset: NDArray[np.float64], step: float) -> NDArray[np.int32]:
    return np.rint((values.astype(np.float64) - offset) / step).astype(np.int32)


def _typed_u2(values: NDArray[Any]) -> dict[str, str]:
    """Whole numbers below 65,536 as a plotly.js typed array (little-endian uint16, base64)."""
    return {"dtype": "u2", "bdata": base64.b64encode(values.astype("<u2").tobytes()).decode()}


def preview_spec(
    scene: GLBScene,
    budget: int = DEFAULT_PREVIEW_POINTS,
    seed: int = 0,
    title: str | None = None,
    point_size: float = 1.5,
    grid: int | None = None,
) -> dict[str, Any]:
    """The preview as a plain plotly figure dict ("data", "layout") holding numpy arrays, for a
    JSON writer that takes them as they are (orjson); see `preview_figure` for what it shows.

    With `grid` (at most 65,535), positions and colour indices are uint16 typed arrays: the
    scene snapped to `grid` steps along its largest extent (a point is layout.meta's
    grid_offset + value × grid_step).
    """
    if grid is not None and not 0 < grid < 1 << 16:
        raise ValueError(f"grid must be from 1 to 65,535 steps, not {grid}")
    total = scene.point_count
    indices = sample_indices(total, budget, seed)
    shown = int(indices.size)
    if shown == total:
        xyz, rgb = scene.points, scene.colors
    else:
        xyz, rgb = scene.points[indices], scene.colors[indices]
    meta: dict[str, Any] = {
        "shown_points": shown,
        "total_points": total,
        "cameras": len(scene.cameras),
    }
    cameras = scene.cameras
    axes: list[Any]
    if grid is None:
        axes = list(np.ascontiguousarray(xyz.T))
    else:
        # Every rerun sends the chart again. On the grid a coordinate is 2 bytes (2.7 base64
        # characters) where float32 is 4 and decimal text about 5; plotly's JSON writer escapes
        # "/" as "\u002f", but with values this small few base64 characters are "/" (~3 %).
        offset, step = _grid_transform(scene, xyz, grid)
        axes = [_typed_u2(column) for column in _on_grid(xyz, offset, step).T]
        cameras = [(_on_grid(v, offset, step).astype(np.float32), f) for v, f in cameras]
        meta.update(grid_offset=offset.tolist(), grid_step=step)

    traces: list[dict[str, Any]] = []
    if shown:
        codes, cmax, colorscale = _palette(rgb)
        # Colours: per-point "rgb(r,g,b)" strings cost ~6 s through plotly's validators and ~38
        # bytes a point; instead each point carries a uint16 index into a palette of the colours
        # actually used (5 bits a channel, max error 4/255; 4 bits, 8/255, past 4,096 colours),
        # given as a colorscale whose stop i is colour i. The trace is never validated here:
        # validating a colorscale of thousands of stops takes seconds; tests validate it once.
        traces.append(
            {
                "type": "scatter3d",
                "name": "points",
                "mode": "markers",
                "x": axes[0],
                "y": axes[1],
                "z": axes[2],
                "marker": {
                    "size": point_size,
                    "color": codes if grid is None else _typed_u2(codes),
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
    if cameras:
        xs, ys, zs = _camera_lines(cameras)
        traces.append(
            {
                "type": "scatter3d",
                "x": xs,
                "y": ys,
                "z": zs,
                "mode": "lines",
                "name": "cameras",
                "line": {"color": _CAMERA_COLOR, "width": 2},
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
        meta=meta,
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
    return {"data": traces, "layout": layout}


def preview_figure(
    scene: GLBScene,
    budget: int = DEFAULT_PREVIEW_POINTS,
    seed: int = 0,
    title: str | None = None,
    point_size: float = 1.5,
    grid: int | None = None,
) -> go.Figure:
    """A plotly 3D figure of a deterministic point sample and the camera wireframes; layout.meta
    holds shown_points, total_points and cameras, as the default title does (title="" drops it)."""
    import plotly.graph_objects as go

    spec = preview_spec(scene, budget, seed, title, point_size, grid)
    # Built unvalidated (plotly's layout validation alone costs ~25 ms); the tests validate the
    # whole figure. Positions and colour indices go out as base64 typed arrays (f4, u2).
    fig = go.Figure(data=spec["data"], layout=spec["layout"], _validate=False)
    fig._validate = True  # whatever the caller adds from here on is validated as usual
    return fig
