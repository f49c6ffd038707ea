"""Cameras as JSON (OpenCV and OpenGL), nerfstudio's transforms.json, PLY, and a run's zip."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._atomic import commit_file, temp_sibling
from ..cameras import Camera, Mode, opencv_to_opengl
from ..errors import ExportError
from ..glb import GLBError, export_ply, read_glb
from ._common import PathLike, Photo, load_cameras, model_to_original, write_model_images


def _matrix(m: NDArray[np.float64]) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    tmp = temp_sibling(path)
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    commit_file(tmp, path)
    return path


def _intrinsics(k: NDArray[np.float64], width: int, height: int) -> dict[str, Any]:
    return {
        "width": width,
        "height": height,
        "fx": float(k[0, 0]),
        "fy": float(k[1, 1]),
        "cx": float(k[0, 2]),
        "cy": float(k[1, 2]),
        "K": _matrix(k),
    }


def _camera_doc(camera: Camera, photo: Photo) -> dict[str, Any]:
    to_world = _inv(camera.extrinsic)
    to_world_glb = _inv(camera.extrinsic_glb)
    doc: dict[str, Any] = {
        "index": camera.index,
        "image": photo.name,
        "intrinsics_model": _intrinsics(camera.intrinsic, camera.width, camera.height),
        "intrinsics_estimated": camera.intrinsic_estimated,
        "opencv": {
            "world_to_camera": _matrix(camera.extrinsic),
            "camera_to_world": _matrix(to_world),
        },
        "opengl": {
            "camera_to_world": _matrix(opencv_to_opengl(to_world)),
            "world_to_camera": _matrix(_inv(opencv_to_opengl(to_world))),
        },
        "glb_frame": {
            "opencv_world_to_camera": _matrix(camera.extrinsic_glb),
            "opengl_camera_to_world": _matrix(opencv_to_opengl(to_world_glb)),
        },
        "residuals": {
            "pose_rms_over_scene_size": camera.pose_residual,
            "pixel_grid_rms_px": _finite(camera.intrinsic_residual_px),
        },
        "point_count": camera.point_count,
    }
    if photo.path is not None:
        original = model_to_original(camera.intrinsic, photo)
        doc["intrinsics_original"] = _intrinsics(original, photo.width, photo.height)
    return doc


def export_cameras_json(
    glb: PathLike,
    out_dir: PathLike,
    *,
    predictions: PathLike | None = None,
    images_dir: PathLike | None = None,
    mode: Mode | None = None,
) -> Path:
    """Write `out_dir/cameras.json`: every camera in OpenCV and OpenGL conventions, named."""
    cameras, photos = load_cameras(glb, predictions=predictions, images_dir=images_dir, mode=mode)
    doc = {
        "format": "vggt-studio cameras 1",
        "conventions": {
            "world": "the first camera's frame, as VGGT reports its extrinsics (x right, y down, "
            "z ahead); glb_frame is the GLB's own coordinates",
            "opencv": "camera axes x right, y down, z ahead",
            "opengl": "camera axes x right, y up, z back (looking down -z)",
            "pixels": "intrinsics put pixel centres at integers (0 … width-1), as VGGT does",
        },
        "source": cameras.source,
        "mode": cameras.mode,
        "scene_scale": cameras.scene_scale,
        "notes": list(cameras.notes),
        "cameras": [_camera_doc(c, p) for c, p in zip(cameras.cameras, photos, strict=True)],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_json(out / "cameras.json", doc)


def _inv(m: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.linalg.inv(m), dtype=np.float64)


def export_nerfstudio(
    glb: PathLike,
    out_dir: PathLike,
    *,
    predictions: PathLike | None = None,
    images_dir: PathLike | None = None,
    mode: Mode | None = None,
) -> Path:
    """Write nerfstudio's `transforms.json` (per-frame PINHOLE intrinsics, OpenGL camera-to-world)
    with the model-sized images in `images/` and the points as `sparse_pc.ply`."""
    cameras, photos = load_cameras(glb, predictions=predictions, images_dir=images_dir, mode=mode)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for camera, photo in zip(cameras.cameras, photos, strict=True):
        k = camera.intrinsic
        # nerfstudio's pixel centres sit at .5, like COLMAP's.
        frames.append(
            {
                "file_path": f"images/{photo.name}",
                "transform_matrix": _matrix(opencv_to_opengl(_inv(camera.extrinsic))),
                "fl_x": float(k[0, 0]),
                "fl_y": float(k[1, 1]),
                "cx": float(k[0, 2] + 0.5),
                "cy": float(k[1, 2] + 0.5),
                "w": camera.width,
                "h": camera.height,
            }
        )
    if images_dir is not None:
        write_model_images(photos, out / "images")
    _write_points_ply(cameras.points, cameras.colors, out / "sparse_pc.ply")
    doc = {"camera_model": "OPENCV", "frames": frames, "ply_file_path": "sparse_pc.ply"}
    return _write_json(out / "transforms.json", doc)


def _write_points_ply(points: NDArray[np.float64], colors: NDArray[np.uint8], path: Path) -> None:
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    row = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
    data = np.empty(len(points), dtype=row)
    data["xyz"], data["rgb"] = points, colors
    tmp = temp_sibling(path)
    with tmp.open("wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    commit_file(tmp, path)


def export_points_ply(glb: PathLike, out_dir: PathLike) -> Path:
    """Write `out_dir/points.ply`: the GLB's points and colours as they are, binary PLY."""
    try:
        scene = read_glb(glb)
    except GLBError as exc:
        raise ExportError(str(exc)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return export_ply(scene, out / "points.ply")


def export_run_zip(run_dir: PathLike, out_file: PathLike) -> Path:
    """Zip a whole run folder (metadata, images, every GLB, the exports), file by file, to
    `out_file`; links and anything outside the folder are left out."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ExportError(f"the run folder {root} does not exist")
    target = Path(out_file)
    tmp = temp_sibling(target)
    resolved_root = root.resolve()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for folder, dirs, files in os.walk(root, followlinks=False):
                dirs.sort()
                for name in sorted(files):
                    path = Path(folder) / name
                    if path.is_symlink() or not path.is_file() or name.startswith("."):
                        continue  # lock files and temporary files are not part of the run
                    if path.resolve() in (target.resolve(), tmp.resolve()):
                        continue
                    if not path.resolve().is_relative_to(resolved_root):
                        continue
                    # GLBs and images are compressed already; deflating them costs time only.
                    packed = path.suffix.lower() in (
                        ".glb",
                        ".jpg",
                        ".jpeg",
                        ".png",
                        ".webp",
                        ".zip",
                    )
                    zf.write(
                        path,
                        path.relative_to(root).as_posix(),
                        compress_type=zipfile.ZIP_STORED if packed else zipfile.ZIP_DEFLATED,
                    )
        commit_file(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
