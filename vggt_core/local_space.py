"""A local Gradio app with the facebook/vggt Space's API and a fast deterministic model stand-in."""

import argparse
import asyncio
import colorsys
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import numpy as np
import trimesh
from gradio.data_classes import FileData, GradioModel
from PIL import Image
from pydantic import model_validator
from starlette.middleware import Middleware

# gradio reads this when a Blocks or Client is created; the stand-in must never phone home.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

log = logging.getLogger(__name__)

TARGET_SIZE = 518
PATCH_SIZE = 14
DEPTH_MODE = "Depthmap and Camera Branch"
POINTMAP_MODE = "Pointmap Branch"
PREDICTION_MODES = (DEPTH_MODE, POINTMAP_MODE)
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
ZEROGPU_QUOTA_ERROR = (
    "You have exceeded your GPU quota (60s requested vs. 0s left). Try again in 0:09:48"
)
UPLOAD_MESSAGE = "Upload complete. Click 'Reconstruct' to begin 3D processing."
NO_RECONSTRUCTION = "No reconstruction available. Please click the Reconstruct button first."
NO_TARGET_DIR = "No valid target directory found. Please upload first."
RUNTIME_FIELDS = (
    "delay",
    "progress_steps",
    "error",
    "fail_times",
    "exit_after",
    "exit_code",
    "upload_delay",
    "download_status",
    "download_garbage",
    "download_truncate",
    "download_rate",
)
NOT_A_GLB = b"<!doctype html><html><body><h1>Your space is in error</h1></body></html>\n"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Options, control file, recording
# ---------------------------------------------------------------------------------------------


@dataclass
class StandInOptions:
    """How the stand-in behaves (the CLI flags of the same names explain each field).

    Runtime fields may change while the server runs; build fields apply when the app is built."""

    delay: float = 0.0
    progress_steps: int = 0
    error: str | None = None
    fail_times: int | None = None
    exit_after: float | None = None
    exit_code: int = 1
    upload_delay: float = 0.0
    download_status: int | None = None
    download_garbage: bool = False
    download_truncate: float | None = None
    download_rate: float | None = None
    return_predictions: bool = False
    queue_max_size: int | None = 20
    concurrency_limit: int | None = 1
    _failure_epoch: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.delay < 0 or self.progress_steps < 0:
            raise ValueError("delay and progress_steps must be >= 0")
        if self.fail_times is not None and self.fail_times < 0:
            raise ValueError("fail_times must be >= 0 or None")
        if self.exit_after is not None and self.exit_after < 0:
            raise ValueError("exit_after must be >= 0 or None")
        if self.upload_delay < 0:
            raise ValueError("upload_delay must be >= 0")
        if self.download_status is not None and not 100 <= self.download_status <= 599:
            raise ValueError("download_status must be an HTTP status (100-599) or None")
        if self.download_truncate is not None and not 0 <= self.download_truncate < 1:
            raise ValueError("download_truncate must be in [0, 1) or None")
        if self.download_rate is not None and self.download_rate <= 0:
            raise ValueError("download_rate must be > 0 or None")

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in ("error", "fail_times"):
            # Setting either again (even to the same value) starts the fail_times count anew.
            super().__setattr__("_failure_epoch", getattr(self, "_failure_epoch", 0) + 1)

    def to_args(self) -> list[str]:
        """The CLI flags that reproduce these options."""
        args = ["--delay", str(self.delay), "--progress-steps", str(self.progress_steps)]
        if self.error is not None:
            args.append(f"--error={self.error}")  # survives a message starting with "-"
        if self.fail_times is not None:
            args += ["--fail-times", str(self.fail_times)]
        if self.exit_after is not None:
            args += ["--exit-after", str(self.exit_after)]
        args += ["--exit-code", str(self.exit_code)]
        if self.upload_delay:
            args += ["--upload-delay", str(self.upload_delay)]
        if self.download_status is not None:
            args += ["--download-status", str(self.download_status)]
        if self.download_garbage:
            args.append("--download-garbage")
        if self.download_truncate is not None:
            args += ["--download-truncate", str(self.download_truncate)]
        if self.download_rate is not None:
            args += ["--download-rate", str(self.download_rate)]
        if self.return_predictions:
            args.append("--return-predictions")
        args += ["--max-size", str(self.queue_max_size if self.queue_max_size is not None else 0)]
        args += ["--concurrency-limit", str(self.concurrency_limit or 0)]
        return args


def write_control(path: str | Path, **values: Any) -> None:
    """Merge runtime option values into a control file atomically (the server re-reads it)."""
    unknown = set(values) - set(RUNTIME_FIELDS)
    if unknown:
        raise ValueError(f"not runtime options: {sorted(unknown)}; allowed: {RUNTIME_FIELDS}")
    path = Path(path)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, path)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The calls recorded in a --record JSON-lines file (an incomplete last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def _token_hash(request: gr.Request | None) -> str | None:
    """The sha256 of the HF token a call carried (gradio_client sends x-hf-authorization)."""
    header = request.headers.get("x-hf-authorization") if request is not None else None
    if not header:
        return None
    return hashlib.sha256(header.removeprefix("Bearer ").encode()).hexdigest()


def _file_facts(param: str, path: str) -> dict[str, Any]:
    data = Path(path).read_bytes()
    return {
        "param": param,
        "name": Path(path).name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# ---------------------------------------------------------------------------------------------
# The stand-in model (numpy only)
# ---------------------------------------------------------------------------------------------


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


def _rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


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
        cam_to_world = _rot_y(step_deg * i) @ _rot_x(1.5 * math.sin(i))
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


# ---------------------------------------------------------------------------------------------
# GLB, the way vggt's visual_util.predictions_to_glb builds it
# ---------------------------------------------------------------------------------------------


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
    rot_45 = _homogeneous(_rot_z(45))
    rot_45[2, 3] = -cam_height
    complete = transform @ _opengl_conversion() @ rot_45
    cone = trimesh.creation.cone(cam_width, cam_height, sections=4)
    vertices = np.concatenate(
        [
            cone.vertices,
            0.95 * cone.vertices,
            _transform_points(_homogeneous(_rot_z(2)), cone.vertices),
        ]
    )
    mesh = trimesh.Trimesh(
        vertices=_transform_points(complete, vertices), faces=_camera_faces(cone), process=False
    )
    # One colour per cone: vertex colours export without scipy (face colours would need it).
    mesh.visual.vertex_colors = np.tile([*face_colors, 255], (len(mesh.vertices), 1))
    scene.add_geometry(mesh)


def predictions_to_glb(
    predictions: dict[str, np.ndarray],
    conf_thres: float | None = 50.0,
    filter_by_frames: str = "all",
    mask_black_bg: bool = False,
    mask_white_bg: bool = False,
    show_cam: bool = True,
    mask_sky: bool = False,
    target_dir: str | Path | None = None,
    prediction_mode: str = "Predicted Pointmap",
) -> trimesh.Scene:
    """Point cloud (+ camera cones) scene aligned to the first camera, as VGGT's demo builds it."""
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
    if mask_sky and target_dir is not None:
        conf = conf * ~sky_mask(images)
    if selected is not None:
        points, conf = points[selected][None], conf[selected][None]
        images, cameras = images[selected][None], cameras[selected][None]

    vertices = points.reshape(-1, 3)
    colors = (np.transpose(images, (0, 2, 3, 1)).reshape(-1, 3) * 255).astype(np.uint8)
    conf = conf.reshape(-1)
    threshold = 0.0 if conf_thres == 0.0 else np.percentile(conf, conf_thres)
    keep = (conf >= threshold) & (conf > 1e-5)
    if mask_black_bg:
        keep &= colors.sum(axis=1, dtype=np.int32) >= 16
    if mask_white_bg:
        keep &= ~((colors[:, 0] > 240) & (colors[:, 1] > 240) & (colors[:, 2] > 240))
    vertices, colors = vertices[keep], colors[keep]
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
    alignment = np.linalg.inv(extrinsics[0]) @ _opengl_conversion() @ _homogeneous(_rot_y(180))
    scene.apply_transform(alignment)
    return scene


def glb_file_name(
    conf_thres: float,
    frame_filter: str,
    mask_black_bg: bool,
    mask_white_bg: bool,
    show_cam: bool,
    mask_sky: bool,
    prediction_mode: str,
) -> str:
    """The GLB name the real demo derives from the settings (it caches by this name)."""
    frame = frame_filter.replace(".", "_").replace(":", "").replace(" ", "_")
    return (
        f"glbscene_{conf_thres}_{frame}_maskb{mask_black_bg}_maskw{mask_white_bg}"
        f"_cam{show_cam}_sky{mask_sky}_pred{prediction_mode.replace(' ', '_')}.glb"
    )


# ---------------------------------------------------------------------------------------------
# Inputs: video frames, sample images
# ---------------------------------------------------------------------------------------------


def _write_glb(
    work: Path,
    predictions: dict[str, np.ndarray],
    conf_thres: float,
    frame_filter: str,
    mask_black_bg: bool,
    mask_white_bg: bool,
    show_cam: bool,
    mask_sky: bool,
    prediction_mode: str,
) -> Path:
    """Filter the predictions with these settings and export the GLB into `work`; its path."""
    settings = (mask_black_bg, mask_white_bg, show_cam, mask_sky, prediction_mode)
    glb_path = work / glb_file_name(conf_thres, frame_filter, *settings)
    scene = predictions_to_glb(
        predictions,
        conf_thres=conf_thres,
        filter_by_frames=frame_filter,
        mask_black_bg=mask_black_bg,
        mask_white_bg=mask_white_bg,
        show_cam=show_cam,
        mask_sky=mask_sky,
        target_dir=work,
        prediction_mode=prediction_mode,
    )
    scene.export(file_obj=str(glb_path))
    return glb_path


def extract_video_frames(video_path: str | Path, images_dir: Path) -> list[Path]:
    """One frame per second as 000000.png, 000001.png, … (Pillow-decodable animations only)."""
    message = (
        f"The local stand-in cannot decode the video {Path(video_path).name!r}: there is no "
        "OpenCV or ffmpeg here. Send images, or an animated GIF/WebP/PNG as the video."
    )
    try:
        clip = Image.open(video_path)
    except (OSError, ValueError) as exc:
        raise gr.Error(message) from exc
    paths = []
    with clip:
        if not getattr(clip, "is_animated", False):
            raise gr.Error(message)
        frames = getattr(clip, "n_frames", 1)
        durations = []
        for index in range(frames):
            clip.seek(index)
            durations.append(clip.info.get("duration") or 100)
        fps = 1000.0 / (sum(durations) / len(durations))
        # The real demo keeps every int(fps)-th frame, counting from 1.
        interval = max(1, int(fps))
        for index in range(frames):
            if (index + 1) % interval:
                continue
            clip.seek(index)
            path = images_dir / f"{len(paths):06}.png"
            clip.convert("RGB").save(path)
            paths.append(path)
    return paths


def write_sample_images(
    directory: str | Path, count: int = 3, size: tuple[int, int] = (160, 120), prefix: str = "img"
) -> list[Path]:
    """Deterministic textured PNGs (sky band, black and white patches), names sorting in order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        shift = 7 * i
        checker = (((x + shift) // 8 + y // 8) % 2) * 60
        waves = 40 * np.sin((x + shift) / 5.0) * np.cos(y / 7.0)
        base = 90 + 80 * (x / width) + checker + waves
        rgb = np.stack([base, 0.8 * base + 30 * (i % 2), 0.6 * base + 20], axis=-1)
        sky_rows = int(0.25 * height)
        rgb[:sky_rows] = np.stack(
            [130 + 10 * np.sin(x[:sky_rows] / 9), 180 + 0 * x[:sky_rows], 240 + 0 * x[:sky_rows]],
            axis=-1,
        )
        rgb[-height // 5 :, : width // 5] = 0  # a black patch
        rgb[-height // 5 :, -width // 5 :] = 255  # a white patch
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
        path = directory / f"{prefix}_{i:03d}.png"
        image.save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# The server-side handlers
# ---------------------------------------------------------------------------------------------


class StandIn:
    """The handlers behind the app, their options, and the record of every call received."""

    def __init__(
        self,
        options: StandInOptions,
        workdir: str | Path,
        *,
        record_path: str | Path | None = None,
        control_path: str | Path | None = None,
        allow_exit: bool = False,
    ) -> None:
        self.options = options
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record_path = Path(record_path) if record_path else None
        self.control_path = Path(control_path) if control_path else None
        self.allow_exit = allow_exit
        self.return_predictions = options.return_predictions
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._failure_key: tuple[Any, ...] | None = None
        self._failures = 0

    # -- options and recording ---------------------------------------------------------------

    def current_options(self) -> tuple[StandInOptions, Any]:
        """The options for this call: the object's, overlaid with the control file's."""
        if self.control_path is None:
            return self.options, None
        try:
            text = self.control_path.read_text()
            stamp = self.control_path.stat().st_mtime_ns
        except FileNotFoundError:
            return self.options, None
        try:
            data = json.loads(text)
            values = {k: v for k, v in data.items() if k in RUNTIME_FIELDS}
            merged = dataclasses.replace(self.options, **values)
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            log.warning("ignoring control file %s: %s", self.control_path, exc)
            return self.options, None
        return merged, (stamp, text)

    def _should_fail(self, options: StandInOptions, control_signature: Any) -> bool:
        if not options.error:
            return False
        key = (id(self.options), self.options._failure_epoch, control_signature)
        with self._lock:
            if key != self._failure_key:
                self._failure_key, self._failures = key, 0
            if options.fail_times is not None and self._failures >= options.fail_times:
                return False
            self._failures += 1
            return True

    def _record(
        self,
        endpoint: str,
        params: dict[str, Any],
        request: gr.Request | None,
        files: list[dict[str, Any]] | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "endpoint": endpoint,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "session_hash": getattr(request, "session_hash", None),
            "params": params,
        }
        if files is not None:
            entry["files"] = files
        entry["token_sha256"] = _token_hash(request)
        with self._lock:
            self.received.append(entry)
            if self.record_path is not None:
                with self.record_path.open("a") as handle:
                    handle.write(json.dumps(entry) + "\n")

    def _resolve(self, target_dir: str | None) -> Path | None:
        if not target_dir or target_dir == "None":
            return None
        path = self.workdir / target_dir
        return path if path.is_dir() else None

    def _simulate_gpu(self, options: StandInOptions, progress: gr.Progress) -> None:
        """Wait like the model would, reporting progress; die mid-way when asked to."""
        start = time.monotonic()
        exit_at = None
        if options.exit_after is not None:
            if not self.allow_exit:
                raise RuntimeError("exit_after is only honoured by a child-process local space")
            exit_at = start + options.exit_after
        steps = options.progress_steps
        ends = [start + options.delay * (i + 1) / max(steps, 1) for i in range(max(steps, 1))]
        for i, end in enumerate(ends):
            if steps:
                progress((i, steps), desc="Reconstructing (stand-in)", unit="steps")
            self._sleep_until(end, exit_at, options.exit_code)
        if exit_at is not None:
            self._sleep_until(exit_at, exit_at, options.exit_code)

    @staticmethod
    def _sleep_until(end: float, exit_at: float | None, exit_code: int) -> None:
        while True:
            now = time.monotonic()
            if exit_at is not None and now >= exit_at:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(exit_code)
            if now >= end:
                return
            time.sleep(min(end, exit_at if exit_at is not None else end) - now)

    # -- endpoints (names and parameter names are the Space's API) ------------------------------

    def handle_uploads(
        self, input_video: str | None, input_images: Sequence[str] | None
    ) -> tuple[str, list[str]]:
        """Copy images by base name (or sample video frames) into a new input_images_<ts>/images."""
        with self._lock:
            while True:
                timestamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")
                target_dir = f"input_images_{timestamp}"
                if not (self.workdir / target_dir).exists():
                    break
                time.sleep(1e-5)
            images_dir = self.workdir / target_dir / "images"
            images_dir.mkdir(parents=True)
        image_paths = []
        for file_path in input_images or []:
            destination = images_dir / Path(file_path).name
            shutil.copy(file_path, destination)
            image_paths.append(destination)
        if input_video is not None:
            image_paths += extract_video_frames(input_video, images_dir)
        return target_dir, sorted(str(p) for p in image_paths)

    def update_gallery_on_upload(
        self,
        input_video: str | None,
        input_images: list[str] | None,
        request: gr.Request | None = None,
    ) -> tuple[None, str | None, list[str] | None, str | None]:
        """Copy the uploads into a new target_dir; return (None, target_dir, gallery, message)."""
        files = [_file_facts("input_images", p) for p in input_images or []]
        if input_video:
            files.append(_file_facts("input_video", input_video))
        params = {
            "input_video": Path(input_video).name if input_video else None,
            "input_images": [Path(p).name for p in input_images] if input_images else None,
        }
        self._record("/update_gallery_on_upload", params, request, files)
        if not input_video and not input_images:
            return None, None, None, None
        options, _ = self.current_options()
        if options.upload_delay:
            time.sleep(options.upload_delay)  # a slow link to the Space, seen as a slow handler
        target_dir, image_paths = self.handle_uploads(input_video, input_images)
        return None, target_dir, image_paths, UPLOAD_MESSAGE

    def gradio_demo(
        self,
        target_dir: str,
        conf_thres: float = 3.0,
        frame_filter: str = "All",
        mask_black_bg: bool = False,
        mask_white_bg: bool = False,
        show_cam: bool = True,
        mask_sky: bool = False,
        prediction_mode: str = "Pointmap Regression",
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects the tracker via the default
    ) -> tuple[Any, ...]:
        """Run the stand-in model on target_dir/images; return (glb, log, dropdown[, npz])."""
        options, control_signature = self.current_options()
        params = {
            "target_dir": target_dir,
            "conf_thres": conf_thres,
            "frame_filter": frame_filter,
            "mask_black_bg": mask_black_bg,
            "mask_white_bg": mask_white_bg,
            "show_cam": show_cam,
            "mask_sky": mask_sky,
            "prediction_mode": prediction_mode,
        }
        self._record("/gradio_demo", params, request)
        # ZeroGPU refuses before the function body runs, so the error comes first.
        if self._should_fail(options, control_signature):
            raise gr.Error(options.error)
        work = self._resolve(target_dir)
        if work is None:
            # The real demo returns one value too many here; Gradio warns and drops the extra.
            return None, NO_TARGET_DIR, None, None
        images_dir = work / "images"
        names = sorted(os.listdir(images_dir)) if images_dir.is_dir() else []
        choices = ["All"] + [f"{i}: {name}" for i, name in enumerate(names)]

        self._simulate_gpu(options, progress)
        image_paths = sorted(images_dir.glob("*"))
        if not image_paths:
            raise ValueError("No images found. Check your upload.")
        predictions = run_stand_in_model(load_and_preprocess_images(image_paths))
        predictions_path = work / "predictions.npz"
        np.savez(predictions_path, **predictions)

        if frame_filter is None:
            frame_filter = "All"
        settings = (mask_black_bg, mask_white_bg, show_cam, mask_sky, prediction_mode)
        glb_path = _write_glb(work, predictions, conf_thres, frame_filter, *settings)
        log_msg = f"Reconstruction Success ({len(names)} frames). Waiting for visualization."
        dropdown = gr.Dropdown(choices=choices, value=frame_filter, interactive=True)
        outputs: tuple[Any, ...] = (str(glb_path), log_msg, dropdown)
        if self.return_predictions:
            outputs += (str(predictions_path),)
        return outputs

    def update_visualization(
        self,
        target_dir: str,
        conf_thres: float,
        frame_filter: str,
        mask_black_bg: bool,
        mask_white_bg: bool,
        show_cam: bool,
        mask_sky: bool,
        prediction_mode: str,
        is_example: str,
        request: gr.Request | None = None,
    ) -> tuple[str | None, str]:
        """Re-filter the saved predictions.npz into a GLB (no model run); return (glb, message)."""
        params = {
            "target_dir": target_dir,
            "conf_thres": conf_thres,
            "frame_filter": frame_filter,
            "mask_black_bg": mask_black_bg,
            "mask_white_bg": mask_white_bg,
            "show_cam": show_cam,
            "mask_sky": mask_sky,
            "prediction_mode": prediction_mode,
            "is_example": is_example,
        }
        self._record("/update_visualization", params, request)
        if is_example == "True":
            return None, NO_RECONSTRUCTION
        work = self._resolve(target_dir)
        if work is None:
            return None, NO_RECONSTRUCTION
        predictions_path = work / "predictions.npz"
        if not predictions_path.exists():
            return (
                None,
                f"No reconstruction available at {predictions_path}. "
                "Please run 'Reconstruct' first.",
            )
        settings = (mask_black_bg, mask_white_bg, show_cam, mask_sky, prediction_mode)
        glb_path = work / glb_file_name(conf_thres, frame_filter, *settings)
        if not glb_path.exists():  # the demo reuses a GLB already made with these settings
            with np.load(predictions_path) as loaded:
                predictions = {key: loaded[key] for key in loaded.files}
            _write_glb(work, predictions, conf_thres, frame_filter, *settings)
        return str(glb_path), "Updating Visualization"


class VideoPayload(GradioModel):
    """The Gradio 5 video payload the real Space takes: {"video": FileData, "subtitles": …}."""

    video: FileData
    subtitles: FileData | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_file(cls, data: Any) -> Any:
        # Gradio 6 browsers and clients send a bare FileData; accept both shapes.
        if isinstance(data, dict) and "path" in data and "video" not in data:
            return {"video": data, "subtitles": None}
        return data


class SpaceVideo(gr.Video):
    """gr.Video taking the real Space's Gradio 5 payload, so callers written for it work here."""

    is_template = True  # keeps the frontend's and the API's component name "video"
    data_model = VideoPayload

    def preprocess(self, payload: Any) -> str | None:
        """The uploaded video's server path."""
        if payload is None:
            return None
        return super().preprocess(payload.video)

    def example_payload(self) -> Any:
        """An example in the Gradio 5 shape."""
        return {"video": super().example_payload(), "subtitles": None}


def clear_fields() -> None:
    """Clear the 3D viewer."""
    return None


def update_log() -> str:
    """The log line shown while reconstructing."""
    return "Loading and Reconstructing..."


def build_demo(stand_in: StandIn) -> gr.Blocks:
    """The Space's UI and event wiring (hence its endpoint names), served by the stand-in."""
    with gr.Blocks(title="VGGT (local stand-in)", analytics_enabled=False) as demo:
        is_example = gr.Textbox(label="is_example", visible=False, value="None")
        gr.Textbox(label="num_images", visible=False, value="None")
        gr.Markdown(
            "# VGGT: Visual Geometry Grounded Transformer (local stand-in)\n"
            "A lightweight deterministic stand-in for the model, with the "
            "`facebook/vggt` Space's API. The point clouds are synthetic."
        )
        target_dir_output = gr.Textbox(label="Target Dir", visible=False, value="None")
        with gr.Row():
            with gr.Column(scale=2):
                input_video = SpaceVideo(label="Upload Video", interactive=True)
                input_images = gr.File(
                    file_count="multiple", label="Upload Images", interactive=True
                )
                image_gallery = gr.Gallery(
                    label="Preview",
                    columns=4,
                    height="300px",
                    buttons=["download"],
                    object_fit="contain",
                    preview=True,
                )
            with gr.Column(scale=4):
                with gr.Column():
                    gr.Markdown("**3D Reconstruction (Point Cloud and Camera Poses)**")
                    log_output = gr.Markdown(
                        "Please upload a video or images, then click Reconstruct.",
                        elem_classes=["custom-log"],
                    )
                    reconstruction_output = gr.Model3D(height=520, zoom_speed=0.5, pan_speed=0.5)
                    predictions_output = (
                        gr.File(label="predictions.npz") if stand_in.return_predictions else None
                    )
                with gr.Row():
                    submit_btn = gr.Button("Reconstruct", scale=1, variant="primary")
                    gr.ClearButton(
                        [
                            input_video,
                            input_images,
                            reconstruction_output,
                            log_output,
                            target_dir_output,
                            image_gallery,
                        ],
                        scale=1,
                    )
                with gr.Row():
                    prediction_mode = gr.Radio(
                        list(PREDICTION_MODES),
                        label="Select a Prediction Mode",
                        value=DEPTH_MODE,
                        scale=1,
                        elem_id="my_radio",
                    )
                with gr.Row():
                    conf_thres = gr.Slider(
                        minimum=0,
                        maximum=100,
                        value=50,
                        step=0.1,
                        label="Confidence Threshold (%)",
                    )
                    frame_filter = gr.Dropdown(
                        choices=["All"], value="All", label="Show Points from Frame"
                    )
                    with gr.Column():
                        show_cam = gr.Checkbox(label="Show Camera", value=True)
                        mask_sky = gr.Checkbox(label="Filter Sky", value=False)
                        mask_black_bg = gr.Checkbox(label="Filter Black Background", value=False)
                        mask_white_bg = gr.Checkbox(label="Filter White Background", value=False)

        demo_outputs = [reconstruction_output, log_output, frame_filter]
        if predictions_output is not None:
            demo_outputs.append(predictions_output)
        settings = [conf_thres, frame_filter, mask_black_bg, mask_white_bg, show_cam, mask_sky]
        submit_btn.click(fn=clear_fields, inputs=[], outputs=[reconstruction_output]).then(
            fn=update_log, inputs=[], outputs=[log_output]
        ).then(
            fn=stand_in.gradio_demo,
            inputs=[target_dir_output, *settings, prediction_mode],
            outputs=demo_outputs,
        ).then(fn=lambda: "False", inputs=[], outputs=[is_example])

        # One listener per control, in the demo's order: /update_visualization, _1 … _6.
        viz_inputs = [target_dir_output, *settings, prediction_mode, is_example]
        for control in (*settings, prediction_mode):
            control.change(
                stand_in.update_visualization, viz_inputs, [reconstruction_output, log_output]
            )
        upload_outputs = [reconstruction_output, target_dir_output, image_gallery, log_output]
        for upload in (input_video, input_images):
            upload.change(
                fn=stand_in.update_gallery_on_upload,
                inputs=[input_video, input_images],
                outputs=upload_outputs,
            )
    return demo


# ---------------------------------------------------------------------------------------------
# Running it: in-process, as a child process, from the command line
# ---------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (gradio cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_glb_download(path: str) -> bool:
    return path.startswith("/gradio_api/file=") and path.endswith(".glb")


class DownloadFaults:
    """ASGI middleware: GLB downloads answer as the download_* options say (status, garbage,
    truncation, a byte rate); every other request passes through untouched."""

    def __init__(self, app: Any, stand_in: "StandIn") -> None:
        self.app = app
        self.stand_in = stand_in

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one request."""
        if scope["type"] != "http" or not _is_glb_download(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        options, _ = self.stand_in.current_options()
        if options.download_status is not None:
            await _send_whole(send, options.download_status, b"Not Found\n", b"text/plain")
        elif options.download_garbage:
            await _send_whole(send, 200, NOT_A_GLB, b"text/html")
        elif options.download_truncate is None and options.download_rate is None:
            await self.app(scope, receive, send)
        else:
            await self._altered(scope, receive, send, options)

    async def _altered(
        self, scope: dict[str, Any], receive: Any, send: Any, options: StandInOptions
    ) -> None:
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        data = bytes(body)
        if start.get("status") == 200 and options.download_truncate is not None:
            data = data[: int(len(data) * options.download_truncate)]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
        rate = options.download_rate
        step = max(1, int(rate / 10)) if rate else max(len(data), 1)  # ten pieces a second
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            for offset in range(0, len(data), step):
                if gone.is_set():
                    return  # the client hung up: stop trickling
                piece = data[offset : offset + step]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                if rate:
                    await asyncio.sleep(len(piece) / rate)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Any, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _send_whole(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _launch(stand_in: "StandIn", demo: gr.Blocks, host: str, port: int | None) -> str:
    options = stand_in.options
    demo.queue(default_concurrency_limit=options.concurrency_limit, max_size=options.queue_max_size)
    attempts = 1 if port else 5
    for attempt in range(attempts):
        try:
            _, local_url, _ = demo.launch(
                prevent_thread_lock=True,
                server_name=host,
                server_port=port or free_port(host),
                quiet=True,
                show_error=True,
                allowed_paths=[str(stand_in.workdir)],
                ssr_mode=False,
                app_kwargs={"middleware": [Middleware(DownloadFaults, stand_in=stand_in)]},
            )
        except OSError:
            # Another process took the port between probing and binding.
            if attempt == attempts - 1:
                raise
            continue
        return str(local_url).rstrip("/")
    raise AssertionError("unreachable")


class LocalSpace:
    """The stand-in served in this process on 127.0.0.1 at a free port (started on creation)."""

    def __init__(
        self,
        options: StandInOptions | None = None,
        workdir: str | Path | None = None,
        *,
        record: str | Path | None = None,
        control: str | Path | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vggt_local_space_"))
        self.stand_in = StandIn(
            options or StandInOptions(), self.workdir, record_path=record, control_path=control
        )
        self.demo = build_demo(self.stand_in)
        self.url = _launch(self.stand_in, self.demo, "127.0.0.1", None)
        self._closed = False

    @property
    def options(self) -> StandInOptions:
        """The live options: change a field and the next call sees it."""
        return self.stand_in.options

    @options.setter
    def options(self, value: StandInOptions) -> None:
        self.stand_in.options = value

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every call received, oldest first: endpoint, session_hash, params, files (uploads)."""
        return self.stand_in.received

    @contextlib.contextmanager
    def override(self, **changes: Any) -> Iterator[StandInOptions]:
        """Set runtime options for a block, then restore the previous values."""
        unknown = set(changes) - set(RUNTIME_FIELDS)
        if unknown:
            raise ValueError(f"not runtime options: {sorted(unknown)}")
        saved = {name: getattr(self.options, name) for name in changes}
        for name, value in changes.items():
            setattr(self.options, name, value)
        try:
            yield self.options
        finally:
            for name, value in saved.items():
                setattr(self.options, name, value)

    def close(self) -> None:
        """Stop the server (and delete the workdir if this object made it)."""
        if self._closed:
            return
        self._closed = True
        self.demo.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalSpace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LocalSpaceProcess:
    """A local space running as a child process (its own process group)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    control_path: Path
    record_path: Path
    log_path: Path
    _owned_dirs: list[Path] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def received(self) -> list[dict[str, Any]]:
        """The calls the child recorded so far."""
        return read_records(self.record_path)

    def set_options(self, **values: Any) -> None:
        """Change runtime options of the running child (through its control file)."""
        write_control(self.control_path, **values)

    def log_text(self) -> str:
        """What the child wrote to stdout/stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (continuing it if stopped), kill it if it lingers, and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
                os.killpg(self.process.pid, signal.SIGCONT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # Anything the child left in its group goes too.
            os.killpg(self.process.pid, signal.SIGKILL)
        for directory in self._owned_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._owned_dirs.clear()

    def __enter__(self) -> "LocalSpaceProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """True once the server answers; False if the process exited first."""
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/config").status_code == 200:
                    return True
            time.sleep(0.1)
    raise TimeoutError(f"local space at {url} did not answer in time")


def spawn_local_space(
    options: StandInOptions | None = None,
    *,
    workdir: str | Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> LocalSpaceProcess:
    """Start `python -m vggt_core.local_space` in a child process; return once it answers."""
    options = options or StandInOptions()
    owned: list[Path] = []
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="vggt_local_space_"))
        owned.append(workdir)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = workdir / "_local_space"
    meta.mkdir(exist_ok=True)
    control, record, log_path = meta / "control.json", meta / "record.jsonl", meta / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    deadline = time.monotonic() + timeout
    for _ in range(3):
        port = free_port()
        argv = [sys.executable, "-m", "vggt_core.local_space", "--port", str(port)]
        argv += ["--workdir", str(workdir), "--control", str(control), "--record", str(record)]
        argv += ["--exit-with-parent", *options.to_args(), *extra_args]
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(PROJECT_ROOT),
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        handle = LocalSpaceProcess(url, port, process, workdir, control, record, log_path, owned)
        try:
            ready = _wait_until_ready(process, url, deadline)
        except BaseException:
            handle.stop()
            raise
        if ready:
            return handle
        if "already in use" not in handle.log_text() and "Cannot find empty port" not in (
            handle.log_text()
        ):
            text = handle.log_text()
            handle.stop()
            raise RuntimeError(f"local space exited with {process.returncode}:\n{text[-4000:]}")
    raise RuntimeError("local space could not get a free port")


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.5)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m vggt_core.local_space`."""
    parser = argparse.ArgumentParser(
        prog="python -m vggt_core.local_space",
        description="Serve a local Gradio app with the facebook/vggt Space's API "
        "(/update_gallery_on_upload, /gradio_demo, /update_visualization) and a fast "
        "deterministic stand-in for the model.",
        epilog="--control names a JSON object of runtime options, re-read at every call, e.g. "
        '{"error": null, "delay": 2.0, "progress_steps": 4, "fail_times": 1}; keys: '
        f"{', '.join(RUNTIME_FIELDS)}. Rewriting it restarts the fail_times count. --record "
        "appends one JSON object per call: endpoint, time, session_hash, params, "
        "token_sha256 (of the HF token sent, or null) and, for uploads, files (param, name, "
        "size, sha256).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    add("--port", type=int, default=7860, help="port (default 7860)")
    add("--workdir", help="where input_images_<ts>/ folders go (default: a new temp dir)")
    add("--delay", type=float, default=0.0, help="seconds the model step takes (default 0)")
    add("--progress-steps", type=int, default=0, help="gr.Progress updates during the delay")
    add("--error", help="raise this with gr.Error from /gradio_demo (e.g. a ZeroGPU quota text)")
    add("--quota-error", action="store_true", help="shorthand for --error with the ZeroGPU text")
    add("--fail-times", type=int, help="fail this many calls, then succeed (default: always)")
    add("--exit-after", type=float, help="die with os._exit this many seconds into the model step")
    add("--exit-code", type=int, default=1, help="exit code for --exit-after (default 1)")
    add("--upload-delay", type=float, default=0.0, help="seconds each upload call waits first")
    add("--download-status", type=int, help="answer GLB downloads with this HTTP status (e.g. 404)")
    add("--download-garbage", action="store_true", help="serve an HTML page as the GLB download")
    add("--download-truncate", type=float, help="serve only this fraction (0-1) of each GLB")
    add("--download-rate", type=float, help="serve GLB downloads at this many bytes a second")
    add("--return-predictions", action="store_true", help="add predictions.npz as 4th output")
    add("--max-size", type=int, default=20, help="queue max_size; 0 = unbounded (default 20)")
    add("--concurrency-limit", type=int, default=1, help="per-event concurrency; 0 = unlimited")
    add("--control", help="JSON file of runtime options, re-read at every call")
    add("--record", help="append every call received to this JSON-lines file")
    add("--exit-with-parent", action="store_true", help="exit when the parent process is gone")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the local space until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = StandInOptions(
        delay=args.delay,
        progress_steps=args.progress_steps,
        error=ZEROGPU_QUOTA_ERROR if args.quota_error else args.error,
        fail_times=args.fail_times,
        exit_after=args.exit_after,
        exit_code=args.exit_code,
        upload_delay=args.upload_delay,
        download_status=args.download_status,
        download_garbage=args.download_garbage,
        download_truncate=args.download_truncate,
        download_rate=args.download_rate,
        return_predictions=args.return_predictions,
        queue_max_size=args.max_size or None,
        concurrency_limit=args.concurrency_limit or None,
    )
    parent = os.getppid()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vggt_local_space_"))
    stand_in = StandIn(
        options,
        workdir,
        record_path=args.record,
        control_path=args.control,
        allow_exit=True,
    )
    demo = build_demo(stand_in)
    url = _launch(stand_in, demo, args.host, args.port)
    print(f"local space serving {url} (workdir {stand_in.workdir})", flush=True)
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
