"""A COLMAP text model (PINHOLE cameras, images, points with tracks) from a VGGT GLB."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..cameras import CameraSet, Mode
from ..errors import ExportError
from ._common import PathLike, Photo, load_cameras, model_to_original, write_model_images


def _quaternion(rotation: NDArray[np.float64]) -> NDArray[np.float64]:
    """A rotation matrix as COLMAP's (qw, qx, qy, qz), qw ≥ 0."""
    # Bar-Itzhack: the eigenvector of the largest eigenvalue, stable for every rotation.
    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz) = rotation
    k = (
        np.array(
            [
                [xx - yy - zz, yx + xy, zx + xz, zy - yz],
                [yx + xy, yy - xx - zz, zy + yz, xz - zx],
                [zx + xz, zy + yz, zz - xx - yy, yx - xy],
                [zy - yz, xz - zx, yx - xy, xx + yy + zz],
            ]
        )
        / 3.0
    )
    _, vectors = np.linalg.eigh(k)
    x, y, z, w = vectors[:, -1]
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def _write_model(folder: Path, cameras: CameraSet, photos: list[Photo], *, original: bool) -> None:
    """cameras.txt, images.txt and points3D.txt; pixels in COLMAP's convention (centres at .5)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame, pixel = cameras.point_frame, cameras.point_pixel.astype(np.float64)
    known = (frame >= 0) & (pixel[:, 0] >= 0)
    with (folder / "cameras.txt").open("w") as fh:
        fh.write("# Camera list with one line of data per camera:\n")
        fh.write("#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
        for camera, photo in zip(cameras.cameras, photos, strict=True):
            k = model_to_original(camera.intrinsic, photo) if original else camera.intrinsic
            w, h = (photo.width, photo.height) if original else (camera.width, camera.height)
            fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5
            params = " ".join(repr(float(v)) for v in (fx, fy, cx, cy))
            fh.write(f"{camera.index + 1} PINHOLE {w} {h} {params}\n")
    point_ids = np.arange(1, len(frame) + 1)
    point2d_index = np.full(len(frame), -1, dtype=np.int64)
    with (folder / "images.txt").open("w") as fh:
        fh.write("# Image list with two lines of data per image:\n")
        fh.write("#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n")
        fh.write("#   POINTS2D[] as (X, Y, POINT3D_ID)\n")
        for camera, photo in zip(cameras.cameras, photos, strict=True):
            q = _quaternion(camera.extrinsic[:3, :3])
            t = camera.extrinsic[:3, 3]
            values = " ".join(repr(float(v)) for v in (*q, *t))
            fh.write(f"{camera.index + 1} {values} {camera.index + 1} {photo.name}\n")
            mine = np.flatnonzero(known & (frame == camera.index))
            point2d_index[mine] = np.arange(len(mine))
            xy = pixel[mine] + 0.5
            if original:
                xy = np.stack(
                    [xy[:, 0] / photo.scale_x, (xy[:, 1] + photo.crop_top) / photo.scale_y], 1
                )
            rows = np.column_stack([xy, point_ids[mine]])
            buffer = io.StringIO()
            np.savetxt(buffer, rows, fmt=["%.6f", "%.6f", "%d"], newline=" ")
            fh.write(buffer.getvalue().rstrip() + "\n")
    with (folder / "points3D.txt").open("w") as fh:
        fh.write("# 3D point list with one line of data per point:\n")
        fh.write("#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        for mask, with_track in ((known, True), (~known, False)):
            index = np.flatnonzero(mask)
            columns: list[NDArray[Any]] = [
                point_ids[index],
                cameras.points[index],
                cameras.colors[index],
                np.zeros(len(index)),
            ]
            fmt = ["%d", "%.9g", "%.9g", "%.9g", "%d", "%d", "%d", "%d"]
            if with_track:
                columns += [frame[index] + 1, point2d_index[index]]
                fmt += ["%d", "%d"]
            np.savetxt(fh, np.column_stack(columns), fmt=fmt)


def export_colmap(
    glb: PathLike,
    out_dir: PathLike,
    *,
    predictions: PathLike | None = None,
    images_dir: PathLike | None = None,
    mode: Mode | None = None,
) -> Path:
    """Write `out_dir/sparse/0` (model-sized images, in `out_dir/images`) and, with the
    original photos, `out_dir/sparse_original/0` (their own sizes); returns `out_dir`."""
    cameras, photos = load_cameras(glb, predictions=predictions, images_dir=images_dir, mode=mode)
    if len(cameras.cameras) < 2:
        raise ExportError(
            "a COLMAP model needs two or more cameras, and this GLB has one (a one-image run, "
            "or a GLB filtered to one frame): export the cameras as JSON instead"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_model(out / "sparse" / "0", cameras, photos, original=False)
    if images_dir is not None:
        _write_model(out / "sparse_original" / "0", cameras, photos, original=True)
        write_model_images(photos, out / "images")
    return out
