"""GLB scenes from VGGT predictions, built exactly as the Space's visual_util.predictions_to_glb."""

import colorsys
import contextlib
import math
from pathlib import Path

import numpy as np
import trimesh

__all__ = ["PREDICTION_KEYS", "load_predictions", "predictions_to_glb", "rot_x", "rot_y", "rot_z"]

PREDICTION_KEYS = (
    "pose_enc",
    "depth",
    "depth_conf",
    "world_points",
    "world_points_conf",
    "images",
    "extrinsic",
    "intrinsic",
    "world_points_from_depth",
)


def rot_x(deg: float) -> np.ndarray:
    """A rotation of `deg` degrees about x (3x3)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    """A rotation of `deg` degrees about y (3x3)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(deg: float) -> np.ndarray:
    """A rotation of `deg` degrees about z (3x3)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def load_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of a predictions.npz, read without pickle (missing keys are left out)."""
    with np.load(path, allow_pickle=False) as loaded:
        return {key: loaded[key] for key in PREDICTION_KEYS if key in loaded.files}


def _opengl_conversion() -> np.ndarray:
    matrix = np.identity(4)
    matrix[1, 1] = matrix[2, 2] = -1
    return matrix


def _homogeneous(rotation: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    return matrix


def _transform_points(transformation: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transformation[:3, :3].T + transformation[:3, 3]


def _rainbow(x: float) -> tuple[int, int, int]:
    """Close to matplotlib's gist_rainbow (red through magenta) without matplotlib."""
    r, g, b = colorsys.hsv_to_rgb(0.85 * x, 1.0, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def _camera_faces(cone: trimesh.Trimesh) -> np.ndarray:
    faces = []
    n = len(cone.vertices)
    for face in cone.faces:
        if 0 in face:
            continue
        v1, v2, v3 = face
        v1_offset, v2_offset, v3_offset = face + n
        v1_offset_2, v2_offset_2, v3_offset_2 = face + 2 * n
        faces += [
            (v1, v2, v2_offset),
            (v1, v1_offset, v3),
            (v3_offset, v2, v3),
            (v1, v2, v2_offset_2),
            (v1, v1_offset_2, v3),
            (v3_offset_2, v2, v3),
        ]
    faces += [(c, b, a) for a, b, c in faces]
    return np.array(faces)


def integrate_camera_into_scene(
    scene: trimesh.Scene, transform: np.ndarray, face_colors: tuple[int, int, int], scale: float
) -> None:
    """Add one 4-sided cone mesh for a camera (camera-to-world transform)."""
    cam_width, cam_height = scale * 0.05, scale * 0.1
    rot_45 = _homogeneous(rot_z(45))
    rot_45[2, 3] = -cam_height
    complete = transform @ _opengl_conversion() @ rot_45
    cone = trimesh.creation.cone(cam_width, cam_height, sections=4)
    vertices = np.concatenate(
        [
            cone.vertices,
            0.95 * cone.vertices,
            _transform_points(_homogeneous(rot_z(2)), cone.vertices),
        ]
    )
    # process=True (trimesh's default, as the Space) merges the shared apex and drops the unused
    # base centre: 14 vertices in first-seen order, the layout the camera reader expects.
    mesh = trimesh.Trimesh(
        vertices=_transform_points(complete, vertices), faces=_camera_faces(cone)
    )
    # One colour per cone: vertex colours export without scipy (face colours would need it).
    mesh.visual.vertex_colors = np.tile([*face_colors, 255], (len(mesh.vertices), 1))  # type: ignore[union-attr]
    scene.add_geometry(mesh)


def predictions_to_glb(
    predictions: dict[str, np.ndarray],
    conf_thres: float | None = 50.0,
    filter_by_frames: str = "all",
    mask_black_bg: bool = False,
    mask_white_bg: bool = False,
    show_cam: bool = True,
    prediction_mode: str = "Predicted Pointmap",
    *,
    keep: np.ndarray | None = None,
) -> trimesh.Scene:
    """Point cloud (+ camera cones) scene aligned to the first camera, as VGGT's demo builds it.

    `keep` (S, H, W, bool) is the sky mask's verdict (True = not sky), applied when given.
    """
    if conf_thres is None:
        conf_thres = 10.0
    selected = None
    if filter_by_frames not in ("all", "All"):
        with contextlib.suppress(ValueError, IndexError):
            selected = int(filter_by_frames.split(":")[0])
    if "Pointmap" in prediction_mode and "world_points" in predictions:
        points, conf = predictions["world_points"], predictions["world_points_conf"]
    else:
        points, conf = predictions["world_points_from_depth"], predictions["depth_conf"]
    images, cameras = predictions["images"], predictions["extrinsic"]
    if keep is not None:
        conf = conf * keep
    if selected is not None:
        points, conf = points[selected][None], conf[selected][None]
        images, cameras = images[selected][None], cameras[selected][None]

    vertices = points.reshape(-1, 3)
    colors = (np.transpose(images, (0, 2, 3, 1)).reshape(-1, 3) * 255).astype(np.uint8)
    conf = conf.reshape(-1)
    threshold = 0.0 if conf_thres == 0.0 else np.percentile(conf, conf_thres)
    chosen = (conf >= threshold) & (conf > 1e-5)
    if mask_black_bg:
        chosen &= colors.sum(axis=1, dtype=np.int32) >= 16
    if mask_white_bg:
        chosen &= ~((colors[:, 0] > 240) & (colors[:, 1] > 240) & (colors[:, 2] > 240))
    vertices, colors = vertices[chosen], colors[chosen]
    if vertices.size == 0:
        vertices, colors, scale = np.array([[1.0, 0, 0]]), np.array([[255, 255, 255]]), 1.0
    else:
        low, high = np.percentile(vertices, [5, 95], axis=0)
        scale = float(np.linalg.norm(high - low))

    scene = trimesh.Scene()
    scene.add_geometry(trimesh.PointCloud(vertices=vertices, colors=colors))
    extrinsics = np.zeros((len(cameras), 4, 4))
    extrinsics[:, :3, :4] = cameras
    extrinsics[:, 3, 3] = 1
    if show_cam:
        for i, world_to_camera in enumerate(extrinsics):
            color = _rainbow(i / len(extrinsics))
            integrate_camera_into_scene(scene, np.linalg.inv(world_to_camera), color, scale)
    # The whole scene hangs under the first camera's frame, OpenGL axes, turned 180° about y.
    alignment = np.linalg.inv(extrinsics[0]) @ _opengl_conversion() @ _homogeneous(rot_y(180))
    scene.apply_transform(alignment)
    return scene
