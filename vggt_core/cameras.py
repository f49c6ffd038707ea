"""Cameras recovered from a VGGT GLB (cone poses, pixel-grid intrinsics) or from predictions.npz."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import trimesh
from numpy.typing import NDArray

from .errors import ExportError
from .glb import GLBError, GLBScene, load_predictions, read_glb
from .glb._build import _camera_faces, _homogeneous, _transform_points, rot_z

__all__ = [
    "MODEL_WIDTH",
    "Camera",
    "CameraSet",
    "Mode",
    "camera_poses",
    "cameras_from_glb",
    "cameras_from_predictions",
    "opencv_to_opengl",
]

Mode = Literal["depth", "pointmap"]
MODEL_WIDTH: Final = 518  # VGGT's input width in crop mode
_ROW_TOL: Final = 1e-5  # same image row: y/z equal within this (rows are ~1/f ≈ 2e-3 apart)
_PIXEL_TOL: Final = 0.02  # on its frame's pixel grid within this many pixels (noise is ~1e-4)
_FLIP: Final = np.diag([1.0, -1.0, -1.0])  # OpenCV <-> OpenGL camera axes


def opencv_to_opengl(camera_to_world: NDArray[Any]) -> NDArray[np.float64]:
    """An OpenCV camera-to-world matrix (x right, y down, z ahead) in OpenGL axes (y up, z back)."""
    out = np.array(camera_to_world, dtype=np.float64)
    out[:3, :3] = camera_to_world[:3, :3] @ _FLIP
    return out


@dataclass(frozen=True, eq=False)
class Camera:
    """One frame's camera: OpenCV world-to-camera extrinsics, pinhole intrinsics in model pixels."""

    index: int
    extrinsic: NDArray[np.float64]  # (4, 4) world-to-camera, world = the first camera's frame
    extrinsic_glb: NDArray[np.float64]  # (4, 4) world-to-camera, world = the GLB's frame
    intrinsic: NDArray[np.float64]  # (3, 3); pixel centres at integers, as VGGT
    width: int
    height: int
    intrinsic_estimated: bool  # True when not exact (pointmap branch or no pixel grid)
    pose_residual: float  # RMS distance of the cone's vertices from the fit, / scene size
    intrinsic_residual_px: float  # RMS distance of points from their pixel centres (nan: none)
    point_count: int  # points whose frame is this one

    @property
    def center(self) -> NDArray[np.float64]:
        """The camera centre in the first camera's frame."""
        rotation, translation = self.extrinsic[:3, :3], self.extrinsic[:3, 3]
        return np.asarray(-rotation.T @ translation)


@dataclass(frozen=True, eq=False)
class CameraSet:
    """All cameras of a GLB and its points, each with its frame and pixel where recoverable."""

    cameras: tuple[Camera, ...]
    points: NDArray[np.float64]  # (N, 3) in the first camera's frame
    points_glb: NDArray[np.float32]  # (N, 3) as the GLB stores them
    colors: NDArray[np.uint8]  # (N, 3) RGB
    point_frame: NDArray[np.int32]  # (N,) frame index, -1 when unknown
    point_pixel: NDArray[np.int32]  # (N, 2) (u, v) in model pixels, -1 when unknown
    mode: Mode
    source: Literal["glb", "predictions"]
    scene_scale: float  # the Space's scene size (the cones are 0.1 of it tall)
    glb_to_first: NDArray[np.float64]  # (4, 4) maps GLB coordinates to the first camera's frame
    notes: tuple[str, ...] = field(default=())


# ---- camera poses from the cones -----------------------------------------------------------


def _cone_templates() -> list[tuple[NDArray[np.float64], NDArray[np.int64]]]:
    """The Space's camera mesh at scene size 1 in OpenGL camera axes, as (vertices, faces): as
    trimesh's default processing leaves it (14 vertices), and unprocessed (18)."""
    cone = trimesh.creation.cone(0.05, 0.1, sections=4)
    raw = np.concatenate(
        [
            cone.vertices,
            0.95 * cone.vertices,
            _transform_points(_homogeneous(rot_z(2)), cone.vertices),
        ]
    )
    faces = _camera_faces(cone)
    shift = _homogeneous(rot_z(45))
    shift[2, 3] = -0.1
    merged = trimesh.Trimesh(vertices=raw, faces=faces)
    return [
        (_transform_points(shift, np.asarray(merged.vertices)), np.asarray(merged.faces)),
        (_transform_points(shift, raw), np.asarray(faces, dtype=np.int64)),
    ]


_TEMPLATES: Final = _cone_templates()


def _by_faces(
    faces: NDArray[np.int64], template_faces: NDArray[np.int64], count: int
) -> NDArray[np.int64] | None:
    """The mesh vertex of each template vertex, read from faces listed in the template's order
    (the face order survives a trimesh that numbers merged vertices differently)."""
    if faces.shape != template_faces.shape:
        return None
    match = np.full(count, -1, dtype=np.int64)
    match[template_faces.ravel()] = faces.ravel()
    if (match < 0).any() or not np.array_equal(match[template_faces], faces):
        return None
    return match


def _similarity(
    source: NDArray[np.float64], target: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, float]:
    """Umeyama fit target ≈ s·R·source + t: (R, t, s, RMS residual)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float((sigma * np.diag(d)).sum() / (a**2).sum())
    translation = mu_t - scale * rotation @ mu_s
    residual = target - (scale * source @ rotation.T + translation)
    return rotation, translation, scale, float(np.sqrt((residual**2).sum(1).mean()))


def _cone_pose(
    vertices: NDArray[np.float32], faces: NDArray[np.int64], index: int
) -> tuple[NDArray[np.float64], float, float]:
    """One cone's OpenCV camera-to-world (GLB frame), the scene scale, the relative residual."""
    target = vertices.astype(np.float64)
    for template, template_faces in _TEMPLATES:
        orders = [np.arange(len(template))] if len(vertices) == len(template) else []
        by_faces = _by_faces(faces, template_faces, len(template))
        if by_faces is not None:
            orders.append(by_faces)
        for order in orders:
            rotation, centre, scale, rms = _similarity(template, target[order])
            if scale > 0 and rms <= 1e-3 * scale:
                pose = np.eye(4)
                pose[:3, :3] = rotation @ _FLIP
                pose[:3, 3] = centre  # the template's apex is its origin
                return pose, scale, rms / scale
    raise ExportError(
        f"camera mesh {index + 1} ({len(vertices)} vertices) is not the camera cone VGGT's demo "
        "draws, so its pose cannot be read"
    )


# ---- intrinsics and pixels from the point grid -------------------------------------------


def _in_camera(points: NDArray[np.float64], extrinsic: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(points @ extrinsic[:3, :3].T + extrinsic[:3, 3])


def _step(values: NDArray[np.float64]) -> float:
    """The grid step of sorted differences: the median of those close to the smallest."""
    values = values[values > 5 * _ROW_TOL]  # gaps within one noisy grid line are far smaller
    if values.size == 0:
        return math.nan
    smallest = values.min()
    return float(np.median(values[values < 1.5 * smallest]))


def _phase(values: NDArray[np.float64]) -> float:
    """The common fractional offset of values lying near a unit grid (circular mean)."""
    angle = np.angle(np.exp(-2j * np.pi * values).mean())
    return float((-angle / (2 * np.pi)) % 1.0)


def _axis_fit(
    coords: NDArray[np.float64], size: int | None, limit: int
) -> tuple[float, float, NDArray[np.int64]] | None:
    """Focal and centre of one axis from normalised coordinates on a pixel grid, and the pixels."""
    step = _step(np.diff(np.unique(coords)))
    if not math.isfinite(step):
        return None
    focal = 1.0 / step
    pixels = np.round(focal * coords + _phase(focal * coords)).astype(np.int64)
    for _ in range(2):
        focal, centre = np.polyfit(coords, pixels.astype(np.float64), 1)
        pixels = np.round(focal * coords + centre).astype(np.int64)
    low, high = int(pixels.min()), int(pixels.max())
    # The grid fixes the centre up to whole pixels; VGGT puts it mid-image (cx = W/2, cy = H/2).
    best: tuple[float, int] | None = None
    for k in range(-low, limit - high):
        span = size if size is not None else -(-(high + k + 1) // 14) * 14
        score = abs(centre + k - span / 2)
        if best is None or score < best[0]:
            best = (score, k)
    if best is None:
        return None
    k = best[1]
    return float(focal), float(centre + k), pixels + k


def _grid(
    q: NDArray[np.float64], height: int | None
) -> tuple[NDArray[np.float64], NDArray[np.int64]] | None:
    """Intrinsics (3x3) and (u, v) pixels of points (in their camera) on one frame's grid."""
    a, b = q[:, 0] / q[:, 2], q[:, 1] / q[:, 2]
    fit_u = _axis_fit(a, MODEL_WIDTH, MODEL_WIDTH)
    fit_v = _axis_fit(b, height, height or MODEL_WIDTH)
    if fit_u is None or fit_v is None:
        return None
    k = np.array([[fit_u[0], 0.0, fit_u[1]], [0.0, fit_v[0], fit_v[1]], [0.0, 0.0, 1.0]])
    return k, np.stack([fit_u[2], fit_v[2]], axis=1)


def _pixels(
    q: NDArray[np.float64], k: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Nearest pixel (u, v) of points in camera axes, and their distance from it in pixels."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = k[0, 0] * q[:, 0] / q[:, 2] + k[0, 2]
        v = k[1, 1] * q[:, 1] / q[:, 2] + k[1, 2]
    ok = (q[:, 2] > 0) & np.isfinite(u) & np.isfinite(v)
    u, v = np.where(ok, u, -1e9), np.where(ok, v, -1e9)
    uv = np.stack([np.round(u), np.round(v)], axis=1)
    err = np.where(ok, np.hypot(u - uv[:, 0], v - uv[:, 1]), np.inf)
    return uv.astype(np.int64), err


def _stretch(q: NDArray[np.float64], k: NDArray[np.float64]) -> int:
    """How many leading points lie on the grid of `k` in row-major order (one frame's stretch).

    The grid's whole-pixel offset is not trusted yet (a sample may miss the first rows or
    columns), so only the order and the span, not the image's bounds, are checked."""
    uv, err = _pixels(q, k)
    du, dv = np.diff(uv[:, 0]), np.diff(uv[:, 1])
    good = err <= _PIXEL_TOL
    good[1:] &= (dv > 0) | ((dv == 0) & (du > 0))
    bad = np.flatnonzero(~good)
    length = int(bad[0]) if bad.size else len(q)
    if length:
        span = uv[:length].max(axis=0) - uv[:length].min(axis=0)
        if span[0] >= MODEL_WIDTH or span[1] >= MODEL_WIDTH:
            return 0
    return length


def _try_frame(
    q: NDArray[np.float64], height: int | None
) -> tuple[NDArray[np.float64], int] | None:
    """Fit a pixel grid to the first points of `q`; (intrinsics, stretch length) if they fit."""
    for sample in (2000, 300, 40):
        fitted = _grid(q[:sample], height)
        if fitted is None:
            continue
        length = _stretch(q, fitted[0])
        if length >= min(len(q), sample, 30):
            return fitted[0], length
    return None


def _refit(q: NDArray[np.float64], uv: NDArray[np.int64]) -> tuple[NDArray[np.float64], float]:
    """Least-squares intrinsics from points in camera axes and their integer pixels; RMS px."""
    a, b = q[:, 0] / q[:, 2], q[:, 1] / q[:, 2]
    if np.ptp(a) > 0 and np.ptp(b) > 0:
        fx, cx = np.polyfit(a, uv[:, 0].astype(np.float64), 1)
        fy, cy = np.polyfit(b, uv[:, 1].astype(np.float64), 1)
    else:
        raise ValueError("degenerate")
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    _, err = _pixels(q, k)
    return k, float(np.sqrt((err**2).mean()))


def _assign(
    points: NDArray[np.float64], extrinsics: list[NDArray[np.float64]], heights: list[int | None]
) -> tuple[list[NDArray[np.float64] | None], NDArray[np.int32], NDArray[np.int32], list[float]]:
    """Each point's frame and pixel, and each frame's exact intrinsics, from the pixel grids.

    Points are stored frame after frame, row after row: each frame is the longest stretch, from
    where the previous one ended, that lies on one camera's pixel grid in row-major order.
    """
    n, count = len(points), len(extrinsics)
    frame = np.full(n, -1, dtype=np.int32)
    pixel = np.full((n, 2), -1, dtype=np.int32)
    intrinsics: list[NDArray[np.float64] | None] = [None] * count
    residuals = [math.nan] * count
    start, first, skipped = 0, 0, 0
    while start < n and first < count and skipped < 100:
        for i in range(first, count):
            # Try a sample first: most cameras are tried on points that are not theirs.
            found = _try_frame(_in_camera(points[start : start + 2000], extrinsics[i]), heights[i])
            if found is None:
                continue
            k = found[0]
            # A frame holds at most 518 × 518 points: no need to look further.
            q = _in_camera(points[start : start + MODEL_WIDTH * MODEL_WIDTH + 1], extrinsics[i])
            length = max(_stretch(q, k), found[1])
            stretch = q[:length]
            uv, _ = _pixels(stretch, k)
            # The whole frame's extent places the principal point better than the sample's.
            regrid = _grid(stretch, heights[i])
            if regrid is not None:
                k, uv = regrid
            with contextlib.suppress(ValueError):  # one row or column: keep the first fit
                k, residuals[i] = _refit(stretch, uv)
            intrinsics[i] = k
            frame[start : start + length] = i
            pixel[start : start + length] = uv
            start, first = start + length, i + 1
            break
        else:
            start, skipped = start + 1, skipped + 1  # a point on no grid: its frame is unknown
    return intrinsics, frame, pixel, residuals


def _estimate(
    points: NDArray[np.float64], extrinsic: NDArray[np.float64], height: int
) -> NDArray[np.float64]:
    """A rough pinhole for a camera whose points are not on a pixel grid: mid-image centre, one
    focal that fits the 98 % of points in front of it within the image."""
    q = _in_camera(points, extrinsic)
    q = q[q[:, 2] > 0]
    focal = float(MODEL_WIDTH)
    if len(q):
        spread = np.quantile(np.abs(q[:, 0] / q[:, 2]), 0.98)
        if spread > 0:
            focal = (MODEL_WIDTH / 2) / float(spread)
    return np.array([[focal, 0.0, MODEL_WIDTH / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


# ---- the public entry points -------------------------------------------------------------


def _read(glb: str | os.PathLike[str] | GLBScene) -> GLBScene:
    if isinstance(glb, GLBScene):
        return glb
    try:
        return read_glb(glb)
    except GLBError as exc:
        raise ExportError(str(exc)) from None


def _relative(
    poses: list[NDArray[np.float64]],
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]], NDArray[np.float64]]:
    """Extrinsics in the first camera's frame and in the GLB's, and the GLB-to-first transform."""
    glb_to_first: NDArray[np.float64] = np.asarray(np.linalg.inv(poses[0]), dtype=np.float64)
    inverse: list[NDArray[np.float64]] = [
        np.asarray(np.linalg.inv(p), dtype=np.float64) for p in poses
    ]
    return [inv @ poses[0] for inv in inverse], inverse, glb_to_first


def _camera_set(
    source: Literal["glb", "predictions"],
    scene: GLBScene,
    cameras: Iterable[Camera],
    points: NDArray[np.float64],
    frame: NDArray[np.int32],
    pixel: NDArray[np.int32],
    glb_to_first: NDArray[np.float64],
    scale: float,
    mode: Mode,
    notes: Iterable[str] = (),
) -> CameraSet:
    """The CameraSet of a scene's cameras and points (placed in the first camera's frame, each
    with its frame and pixel), as both entry points build it."""
    return CameraSet(
        cameras=tuple(cameras),
        points=points,
        points_glb=np.asarray(scene.points),
        colors=np.asarray(scene.colors),
        point_frame=frame,
        point_pixel=pixel,
        mode=mode,
        source=source,
        scene_scale=scale,
        glb_to_first=glb_to_first,
        notes=tuple(notes),
    )


def camera_poses(
    glb: str | os.PathLike[str] | GLBScene,
) -> tuple[list[NDArray[np.float64]], float]:
    """Only the poses (world-to-camera in the first camera's frame) and the scene size: the
    cones alone, without the point grid's work."""
    scene = _read(glb)
    if not scene.cameras:
        raise ExportError(f"{scene.name} has no camera cones (it was made with Show camera off)")
    fits = [_cone_pose(vertices, faces, i) for i, (vertices, faces) in enumerate(scene.cameras)]
    extrinsics, _, _ = _relative([fit[0] for fit in fits])
    return extrinsics, float(np.median([fit[1] for fit in fits]))


def cameras_from_glb(
    glb: str | os.PathLike[str] | GLBScene,
    *,
    mode: Mode | None = None,
    heights: list[int] | None = None,
) -> CameraSet:
    """Cameras of a GLB VGGT's demo wrote; `mode` None tells the branch from the points, and
    `heights` (model pixels per frame, known from the images) fixes the principal point's row."""
    scene = _read(glb)
    name = scene.name
    if not scene.cameras:
        raise ExportError(
            f"{name} has no camera cones (it was made with Show camera off): re-render it with "
            "cameras on, or give the run's predictions.npz"
        )
    if heights is not None and len(heights) != len(scene.cameras):
        raise ExportError(
            f"{name} has {len(scene.cameras)} cameras but {len(heights)} images were given: "
            "give exactly the images it was made from"
        )
    fits = [_cone_pose(vertices, faces, i) for i, (vertices, faces) in enumerate(scene.cameras)]
    poses = [fit[0] for fit in fits]
    scale = float(np.median([fit[1] for fit in fits]))
    extrinsics, extrinsics_glb, glb_to_first = _relative(poses)
    points = _in_camera(scene.points.astype(np.float64), glb_to_first)
    sizes: list[int | None] = list(heights) if heights is not None else [None] * len(poses)
    intrinsics, frame, pixel, residuals = _assign(points, extrinsics, sizes)
    notes: list[str] = []
    uncertain_row = False
    if heights is None and any(k is not None for k in intrinsics):
        # All frames share one height; a frame whose points span it whole tells it, and
        # VGGT's principal point is mid-image, which then fixes every frame's row offset.
        shared = _shared_height(intrinsics, frame, pixel)
        if shared is not None:
            sizes = [shared[0]] * len(poses)
            intrinsics, frame, pixel, residuals = _assign(points, extrinsics, sizes)
        if shared is None or not shared[1]:
            uncertain_row = True
            notes.append(
                "no frame's points span its whole height, so the principal point's row may be "
                "off by whole pixels (flagged estimated): give the images for exact values"
            )
    on_grid = float((pixel[:, 0] >= 0).mean()) if len(points) else 0.0
    if mode is None:
        mode = "depth" if on_grid >= 0.9 else "pointmap"
    if len(poses) == 1:
        notes.append(
            f"{name} shows one frame: a single camera, so no point is seen twice (a GLB "
            "filtered to one frame keeps only that frame's camera)"
        )
    if mode == "pointmap":
        notes.append(
            "pointmap branch: the points come from the point head, not a pinhole, so the "
            "intrinsics are a best fit (flagged estimated)"
        )
    cameras = []
    for i, (pose_fit, k) in enumerate(zip(fits, intrinsics, strict=True)):
        height = sizes[i] or _height_of(pixel[frame == i])
        if k is None:
            k = _estimate(points, extrinsics[i], height)
        cameras.append(
            Camera(
                index=i,
                extrinsic=extrinsics[i],
                extrinsic_glb=extrinsics_glb[i],
                intrinsic=k,
                width=MODEL_WIDTH,
                height=height,
                intrinsic_estimated=mode == "pointmap" or intrinsics[i] is None or uncertain_row,
                pose_residual=pose_fit[2],
                intrinsic_residual_px=residuals[i],
                point_count=int((frame == i).sum()),
            )
        )
    return _camera_set(
        "glb", scene, cameras, points, frame, pixel, glb_to_first, scale, mode, notes
    )


def _shared_height(
    intrinsics: list[NDArray[np.float64] | None], frame: NDArray[np.int32], pixel: NDArray[np.int32]
) -> tuple[int, bool] | None:
    """The frames' shared height (a multiple of 14) with VGGT's mid-image principal point, and
    whether a frame spans it whole (else it is the least height every frame allows)."""
    best: int | None = None
    for i, k in enumerate(intrinsics):
        rows = pixel[frame == i, 1]
        if k is None or not rows.size:
            continue
        height = -(-(int(rows.max()) + 1) // 14) * 14
        if height > MODEL_WIDTH or abs(k[1, 2] - height / 2) >= 0.01:
            continue
        if rows.min() == 0 and rows.max() == height - 1:
            return height, True
        best = height if best is None else max(best, height)
    return (best, False) if best is not None else None


def _height_of(pixels: NDArray[np.int32]) -> int:
    """VGGT's image height from the rows a frame's points reach (a multiple of 14, ≤ 518)."""
    if not len(pixels):
        return MODEL_WIDTH
    return int(min(MODEL_WIDTH, max(14, -(-(int(pixels[:, 1].max()) + 1) // 14) * 14)))


def cameras_from_predictions(
    predictions: str | os.PathLike[str] | dict[str, NDArray[np.float32]],
    glb: str | os.PathLike[str] | GLBScene,
    *,
    mode: Mode = "depth",
) -> CameraSet:
    """Cameras from predictions.npz (exact, VGGT's own) with the GLB's points, frames and pixels."""
    arrays = predictions if isinstance(predictions, dict) else load_predictions(Path(predictions))
    if "extrinsic" not in arrays or "intrinsic" not in arrays:
        raise ExportError("predictions.npz has no 'extrinsic' and 'intrinsic' arrays")
    scene = _read(glb)
    count, height = len(arrays["extrinsic"]), int(arrays["images"].shape[2])
    extrinsics = []
    for matrix in arrays["extrinsic"].astype(np.float64):
        full = np.eye(4)
        full[:3, :4] = matrix
        extrinsics.append(full)
    # The GLB hangs under the alignment inv(E0) · OpenGL · 180° about y (apply_scene_alignment).
    align = (
        np.linalg.inv(extrinsics[0]) @ np.diag([1.0, -1.0, -1.0, 1.0]) @ np.diag([-1.0, 1, -1, 1])
    )
    glb_to_first = extrinsics[0] @ np.linalg.inv(align)
    points = _in_camera(scene.points.astype(np.float64), glb_to_first)
    to_first = [e @ np.linalg.inv(extrinsics[0]) for e in extrinsics]
    _, frame, pixel, residuals = _assign(points, to_first, [height] * count)
    scale = math.nan
    if len(points):
        low, high = np.percentile(points, [5, 95], axis=0)
        scale = float(np.linalg.norm(high - low))
    cameras = tuple(
        Camera(
            index=i,
            extrinsic=to_first[i],
            extrinsic_glb=extrinsics[i] @ np.linalg.inv(align),
            intrinsic=arrays["intrinsic"][i].astype(np.float64),
            width=int(arrays["images"].shape[3]),
            height=height,
            intrinsic_estimated=False,
            pose_residual=0.0,
            intrinsic_residual_px=residuals[i],
            point_count=int((frame == i).sum()),
        )
        for i in range(count)
    )
    return _camera_set(
        "predictions", scene, cameras, points, frame, pixel, glb_to_first, scale, mode
    )
