"""Cameras recovered from the Space's GLB agree with the stand-in's ground-truth predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh
from gradio_client import Client, handle_file

from vggt_core.cameras import CameraSet, cameras_from_glb, cameras_from_predictions
from vggt_core.errors import ExportError
from vggt_core.glb import predictions_to_glb, read_glb
from vggt_core.local_space import LocalSpace, write_sample_images
from vggt_core.local_space._model import load_and_preprocess_images, run_stand_in_model

DEPTH = "Depthmap and Camera Branch"
POINTMAP = "Predicted Pointmap"


@dataclass
class Built:
    """A GLB built as the Space builds it, with its ground truth."""

    glb: Path
    images: Path
    predictions: dict[str, np.ndarray]


def build(
    folder: Path,
    count: int,
    size: tuple[int, int],
    *,
    mode: str = DEPTH,
    conf: float = 50.0,
    black: bool = False,
    white: bool = False,
    show_cam: bool = True,
) -> Built:
    """Sample photos, the stand-in model's predictions and the GLB made from them."""
    images = folder / "images"
    paths = write_sample_images(images, count=count, size=size)
    predictions = run_stand_in_model(load_and_preprocess_images(sorted(paths)))
    scene = predictions_to_glb(
        predictions,
        conf_thres=conf,
        mask_black_bg=black,
        mask_white_bg=white,
        show_cam=show_cam,
        prediction_mode=mode,
    )
    glb = folder / "scene.glb"
    scene.export(glb)
    return Built(glb, images, predictions)


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The angle of the rotation taking b to a, in degrees."""
    m = a @ b.T
    sin = np.linalg.norm([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / 2
    return math.degrees(math.atan2(sin, (np.trace(m) - 1) / 2))  # acos loses small angles


def errors(found: CameraSet, truth: dict[str, np.ndarray]) -> dict[str, float]:
    """The worst error of each figure over all cameras, in the units the issue sets."""
    worst = {"focal_rel": 0.0, "principal_px": 0.0, "rotation_deg": 0.0, "centre_rel": 0.0}
    for camera in found.cameras:
        k, e = truth["intrinsic"][camera.index], truth["extrinsic"][camera.index]
        focal = np.abs(np.diag(camera.intrinsic)[:2] / np.diag(k)[:2] - 1).max()
        principal = np.abs(camera.intrinsic[:2, 2] - k[:2, 2]).max()
        rotation = rotation_error_deg(camera.extrinsic[:3, :3], e[:, :3].astype(np.float64))
        centre_true = -e[:, :3].T.astype(np.float64) @ e[:, 3]
        centre = np.linalg.norm(camera.center - centre_true) / found.scene_scale
        for key, value in zip(worst, (focal, principal, rotation, centre), strict=True):
            worst[key] = max(worst[key], float(value))
    return worst


def assert_exact(found: CameraSet, truth: dict[str, np.ndarray], branch: str) -> None:
    """The issue's bounds, and every point at its frame's pixel in the ground truth."""
    worst = errors(found, truth)
    assert worst["focal_rel"] < 1e-4, worst
    assert worst["principal_px"] < 0.01, worst
    assert worst["rotation_deg"] < 0.001, worst
    assert worst["centre_rel"] < 1e-5, worst
    assert (found.point_frame >= 0).all() and (found.point_pixel >= 0).all()
    key = "world_points" if branch == POINTMAP else "world_points_from_depth"
    u, v = found.point_pixel[:, 0], found.point_pixel[:, 1]
    expected = truth[key][found.point_frame, v, u]
    assert np.abs(found.points - expected).max() < 1e-5 * found.scene_scale
    assert np.all(np.diff(found.point_frame) >= 0)  # frame after frame, as stored


@pytest.mark.parametrize(
    ("count", "size", "conf", "black", "white"),
    [
        (1, (160, 120), 50.0, False, False),
        (3, (120, 200), 30.0, True, True),  # portrait: resized to 518×868, cropped to 518×518
        (5, (200, 100), 0.0, False, False),
        (12, (160, 120), 60.0, True, False),
    ],
)
def test_depth_branch_cameras_are_exact(
    tmp_path: Path,
    count: int,
    size: tuple[int, int],
    conf: float,
    black: bool,
    white: bool,
) -> None:
    built = build(tmp_path, count, size, conf=conf, black=black, white=white)
    height = built.predictions["images"].shape[2]
    found = cameras_from_glb(built.glb, heights=[height] * count)  # the images' heights
    assert found.mode == "depth" and found.source == "glb"
    assert len(found.cameras) == count
    assert not any(c.intrinsic_estimated for c in found.cameras)
    assert all(c.width == 518 and c.height == height for c in found.cameras)
    assert all(c.intrinsic_residual_px < 0.01 and c.pose_residual < 1e-5 for c in found.cameras)
    assert_exact(found, built.predictions, DEPTH)
    assert sum(c.point_count for c in found.cameras) == len(found.points)
    # A bare GLB: the same values; flagged (and said) only when no frame spans its height.
    bare = cameras_from_glb(built.glb)
    assert_exact(bare, built.predictions, DEPTH)
    flagged = [c.intrinsic_estimated for c in bare.cameras]
    assert flagged in ([False] * count, [True] * count)
    assert any("whole height" in note for note in bare.notes) == flagged[0]


def test_sparse_points_without_images_are_flagged_and_exact_with_them(tmp_path: Path) -> None:
    built = build(tmp_path, 3, (160, 120), conf=99.9)  # ~200 points a frame, no edge rows
    bare = cameras_from_glb(built.glb)
    assert all(c.intrinsic_estimated for c in bare.cameras)
    assert any("give the images" in note for note in bare.notes)
    found = cameras_from_glb(built.glb, heights=[392] * 3)
    assert not any(c.intrinsic_estimated for c in found.cameras)
    assert_exact(found, built.predictions, DEPTH)


def test_pointmap_branch_is_flagged_estimated(tmp_path: Path) -> None:
    built = build(tmp_path, 4, (160, 120), mode=POINTMAP)
    found = cameras_from_glb(built.glb, mode="pointmap")
    assert found.mode == "pointmap"
    assert all(c.intrinsic_estimated for c in found.cameras)
    assert any("estimated" in note for note in found.notes)
    # The stand-in's point head is a pinhole too, so the estimate happens to be exact here.
    assert errors(found, built.predictions)["rotation_deg"] < 0.001


def test_predictions_cameras_agree_with_the_glb_cameras(tmp_path: Path) -> None:
    built = build(tmp_path, 6, (160, 120), black=True)
    npz = tmp_path / "predictions.npz"
    np.savez(npz, **built.predictions)  # type: ignore[arg-type]
    from_npz = cameras_from_predictions(npz, built.glb)
    from_glb = cameras_from_glb(built.glb)
    assert from_npz.source == "predictions"
    for a, b in zip(from_npz.cameras, from_glb.cameras, strict=True):
        assert rotation_error_deg(a.extrinsic[:3, :3], b.extrinsic[:3, :3]) < 0.001
        assert np.linalg.norm(a.center - b.center) < 1e-5 * from_glb.scene_scale
        assert np.allclose(a.intrinsic, b.intrinsic, rtol=1e-4, atol=0.01)
        assert np.allclose(a.extrinsic_glb, b.extrinsic_glb, atol=1e-5)
    assert np.array_equal(from_npz.point_frame, from_glb.point_frame)
    assert np.array_equal(from_npz.point_pixel, from_glb.point_pixel)
    assert np.allclose(from_npz.points, from_glb.points, atol=1e-5)


def test_glb_frame_extrinsics_map_glb_points_into_the_camera(tmp_path: Path) -> None:
    built = build(tmp_path, 3, (160, 120))
    found = cameras_from_glb(built.glb)
    scene = read_glb(built.glb)
    for camera in found.cameras:
        mine = found.point_frame == camera.index
        via_glb = scene.points[mine] @ camera.extrinsic_glb[:3, :3].T + camera.extrinsic_glb[:3, 3]
        via_first = found.points[mine] @ camera.extrinsic[:3, :3].T + camera.extrinsic[:3, 3]
        assert np.allclose(via_glb, via_first, atol=1e-5 * found.scene_scale)


def test_glb_without_cones_says_how_to_get_them(tmp_path: Path) -> None:
    built = build(tmp_path, 2, (160, 120), show_cam=False)
    with pytest.raises(ExportError, match=r"no camera cones.*Show camera off"):
        cameras_from_glb(built.glb)


def test_glb_of_one_frame_gives_its_camera_and_says_so(tmp_path: Path) -> None:
    built = build(tmp_path, 1, (160, 120))
    found = cameras_from_glb(built.glb)
    assert len(found.cameras) == 1
    assert any("one frame" in note for note in found.notes)
    assert np.allclose(found.cameras[0].extrinsic, np.eye(4))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"PK\x03\x04" + data[4:], "not a GLB file"),
        (lambda data: b"", "empty"),
    ],
)
def test_damaged_glb_gets_a_clear_message(tmp_path: Path, damage, message: str) -> None:
    built = build(tmp_path, 2, (160, 120))
    bad = tmp_path / "bad.glb"
    bad.write_bytes(damage(built.glb.read_bytes()))
    with pytest.raises(ExportError, match=message):
        cameras_from_glb(bad)


def test_missing_glb_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        cameras_from_glb(tmp_path / "nothing.glb")


def test_cameras_from_the_running_stand_in_match_its_predictions(
    local_space: LocalSpace, tmp_path: Path
) -> None:
    paths = write_sample_images(tmp_path / "upload", count=4, size=(160, 120))
    client = Client(local_space.url, token=False, download_files=False, verbose=False)
    try:
        uploaded = client.predict(
            input_video=None,
            input_images=[handle_file(str(p)) for p in paths],
            api_name="/update_gallery_on_upload",
        )
        glb_file = client.predict(
            target_dir=uploaded[1],
            conf_thres=50.0,
            frame_filter="All",
            mask_black_bg=True,
            mask_white_bg=False,
            show_cam=True,
            mask_sky=False,
            prediction_mode=DEPTH,
            api_name="/gradio_demo",
        )[0]
    finally:
        client.close()
    response = httpx.get(glb_file["url"], timeout=60)
    response.raise_for_status()
    glb = tmp_path / "space.glb"
    glb.write_bytes(response.content)
    npz = local_space.workdir / uploaded[1] / "predictions.npz"
    with np.load(npz) as loaded:
        truth = {key: loaded[key] for key in loaded.files}
    found = cameras_from_glb(glb)
    assert_exact(found, truth, DEPTH)
    assert errors(cameras_from_predictions(npz, glb), truth)["rotation_deg"] == 0.0


def test_a_point_head_off_the_pixel_rays_is_detected_and_estimated(tmp_path: Path) -> None:
    built = build(tmp_path, 3, (160, 120))
    rng = np.random.default_rng(3)
    points = built.predictions["world_points"]
    # VGGT's point head does not put points on pixel rays: nudge each by up to ~0.5 %.
    built.predictions["world_points"] = points * (1 + 0.005 * rng.standard_normal(points.shape))
    glb = tmp_path / "pointmap.glb"
    predictions_to_glb(built.predictions, prediction_mode=POINTMAP).export(glb)
    found = cameras_from_glb(glb)
    assert found.mode == "pointmap"
    assert all(c.intrinsic_estimated for c in found.cameras)
    assert (found.point_frame < 0).all()  # no grid, so no frame or pixel is claimed
    worst = errors(found, built.predictions)
    assert worst["rotation_deg"] < 0.001 and worst["centre_rel"] < 1e-5  # poses stay exact
    assert worst["focal_rel"] < 0.5  # a rough estimate, and labelled so


def test_cones_whose_vertices_another_trimesh_numbered_differently(tmp_path: Path) -> None:
    built = build(tmp_path, 3, (160, 120))
    scene = predictions_to_glb(built.predictions, prediction_mode=DEPTH)
    rng = np.random.default_rng(5)
    for name, mesh in list(scene.geometry.items()):
        if isinstance(mesh, trimesh.Trimesh):
            order = rng.permutation(len(mesh.vertices))  # new vertex j is old vertex order[j]
            renumber = np.argsort(order)
            scene.geometry[name] = trimesh.Trimesh(
                mesh.vertices[order], renumber[mesh.faces], process=False
            )
    glb = tmp_path / "renumbered.glb"
    scene.export(glb)
    assert_exact(cameras_from_glb(glb), built.predictions, DEPTH)


def test_a_mesh_that_is_not_a_camera_cone_is_named(tmp_path: Path) -> None:
    built = build(tmp_path, 2, (160, 120))
    scene = predictions_to_glb(built.predictions, prediction_mode=DEPTH)
    scene.add_geometry(trimesh.creation.box())
    glb = tmp_path / "with_box.glb"
    scene.export(glb)
    with pytest.raises(ExportError, match=r"camera mesh 3 .* is not the camera cone"):
        cameras_from_glb(glb)
