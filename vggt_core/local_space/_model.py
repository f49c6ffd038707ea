"""The numpy stand-in for VGGT: its image preprocessing, VGGT-shaped predictions, a sky mask."""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..glb import PREDICTION_KEYS, rot_x, rot_y

__all__ = [
    "PREDICTION_KEYS",
    "load_and_preprocess_images",
    "run_stand_in_model",
    "sky_mask",
    "unproject_depth_map_to_point_map",
]

TARGET_SIZE = 518
PATCH_SIZE = 14


def load_and_preprocess_images(image_paths: Sequence[str | Path]) -> np.ndarray:
    """VGGT's load_and_preprocess_images(mode="crop") in numpy: (S, 3, H, W) float32 in 0-1."""
    if not image_paths:
        raise ValueError("At least 1 image is required")
    images = []
    for image_path in image_paths:
        with Image.open(image_path) as opened:
            img = opened.copy()
        if img.mode == "RGBA":
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        width, height = img.size
        new_width = TARGET_SIZE
        new_height = round(height * (new_width / width) / PATCH_SIZE) * PATCH_SIZE
        img = img.resize((new_width, new_height), Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        if new_height > TARGET_SIZE:
            start_y = (new_height - TARGET_SIZE) // 2
            array = array[:, start_y : start_y + TARGET_SIZE, :]
        images.append(array)
    max_h = max(a.shape[1] for a in images)
    max_w = max(a.shape[2] for a in images)
    padded = []
    for array in images:
        pad_h, pad_w = max_h - array.shape[1], max_w - array.shape[2]
        if pad_h or pad_w:
            # VGGT pads mixed shapes with white, centred.
            pads = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
            array = np.pad(array, pads, constant_values=1.0)
        padded.append(array)
    return np.stack(padded).astype(np.float32)


def _mat_to_quat_xyzw(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrix to a unit quaternion, scalar last (VGGT's pose_enc order)."""
    m = rotation
    w = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    return np.array([x, y, z, w])


def _arc_cameras(count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cameras on an arc around a point 2 units in front of the first (which is the world frame)."""
    radius, step_deg = 2.0, 8.0
    pivot = np.array([0.0, 0.0, radius])
    extrinsic = np.zeros((count, 3, 4))
    for i in range(count):
        cam_to_world = rot_y(step_deg * i) @ rot_x(1.5 * math.sin(i))
        center = pivot + cam_to_world @ np.array([0.0, 0.0, -radius])
        rotation = cam_to_world.T
        extrinsic[i, :, :3] = rotation
        extrinsic[i, :, 3] = -rotation @ center
    focal = 0.9 * width
    intrinsic = np.zeros((count, 3, 3))
    intrinsic[:, 0, 0] = intrinsic[:, 1, 1] = focal
    intrinsic[:, 0, 2], intrinsic[:, 1, 2], intrinsic[:, 2, 2] = width / 2, height / 2, 1.0
    return extrinsic, intrinsic


def unproject_depth_map_to_point_map(
    depth: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray
) -> np.ndarray:
    """World points (S, H, W, 3) from depth (S, H, W, 1) and OpenCV camera-from-world cameras."""
    _, h, w, _ = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    d = depth[..., 0].astype(np.float32)
    k = intrinsic.astype(np.float32)
    fx, fy = k[:, 0, 0, None, None], k[:, 1, 1, None, None]
    cx, cy = k[:, 0, 2, None, None], k[:, 1, 2, None, None]
    x, y = (u - cx) / fx * d, (v - cy) / fy * d
    t = extrinsic[:, :, 3].astype(np.float32)
    r = extrinsic[:, :, :3].astype(np.float32)
    x, y, z = x - t[:, 0, None, None], y - t[:, 1, None, None], d - t[:, 2, None, None]
    # world = R^T (cam - t), written out: numpy's batched 3x3 matmul is slow on this shape.
    columns = [
        x * r[:, 0, i, None, None] + y * r[:, 1, i, None, None] + z * r[:, 2, i, None, None]
        for i in range(3)
    ]
    return np.stack(columns, axis=-1)


def run_stand_in_model(images: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic VGGT-shaped predictions: brightness-derived depth, cameras on an arc."""
    s, _, h, w = images.shape
    luminance = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    depth = (2.0 * (1.25 - 0.5 * luminance))[..., None]
    extrinsic, intrinsic = _arc_cameras(s, h, w)
    from_depth = unproject_depth_map_to_point_map(depth, extrinsic, intrinsic)
    # The point head sees a slightly different depth, as VGGT's two branches disagree a little.
    head_depth = depth * (1.0 + 0.06 * (luminance[..., None] - 0.5))
    world_points = unproject_depth_map_to_point_map(head_depth, extrinsic, intrinsic)
    grad_y, grad_x = np.gradient(luminance, axis=(1, 2))
    texture = np.minimum(np.hypot(grad_x, grad_y) * 20.0, 5.0)
    rng = np.random.default_rng(0)
    # Tiny fixed jitter breaks ties so every percentile really cuts (VGGT's conf is >= 1).
    depth_conf = 1.0 + texture + 0.5 * luminance + 0.01 * rng.random((s, h, w))
    points_conf = 1.0 + 0.8 * texture + 0.5 * (1 - luminance) + 0.01 * rng.random((s, h, w))
    pose_enc = np.zeros((s, 9))
    for i in range(s):
        pose_enc[i, :3] = extrinsic[i, :, 3]
        pose_enc[i, 3:7] = _mat_to_quat_xyzw(extrinsic[i, :, :3])
    pose_enc[:, 7] = 2 * np.arctan(h / 2 / intrinsic[:, 1, 1])
    pose_enc[:, 8] = 2 * np.arctan(w / 2 / intrinsic[:, 0, 0])
    predictions = {
        "pose_enc": pose_enc,
        "depth": depth,
        "depth_conf": depth_conf,
        "world_points": world_points,
        "world_points_conf": points_conf,
        "images": images,
        "extrinsic": extrinsic,
        "intrinsic": intrinsic,
        "world_points_from_depth": from_depth,
    }
    return {
        key: np.ascontiguousarray(value, dtype=np.float32) for key, value in predictions.items()
    }


def sky_mask(images: np.ndarray) -> np.ndarray:
    """A cheap stand-in for VGGT's sky segmenter: bright bluish pixels in the upper 60 %."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    h = images.shape[2]
    upper = (np.arange(h) < 0.6 * h)[None, :, None]
    return (b > r + 0.08) & (b >= g - 0.02) & ((r + g + b) / 3 > 0.45) & upper
