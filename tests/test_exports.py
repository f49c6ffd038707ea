"""Exports read back with their own readers: COLMAP (pycolmap), JSON, nerfstudio, PLY, zip, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap
import pytest
import trimesh
from PIL import Image
from test_cameras import Built, build, rotation_error_deg

from vggt_core.cameras import cameras_from_glb
from vggt_core.errors import ExportError
from vggt_core.exports import (
    export_cameras_json,
    export_colmap,
    export_nerfstudio,
    export_points_ply,
    export_run_zip,
)
from vggt_core.glb import predictions_to_glb, read_glb
from vggt_core.local_space import write_sample_images
from vggt_core.local_space._model import load_and_preprocess_images, run_stand_in_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def portrait(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Three portrait photos (120×200, cropped by VGGT to 518×518), masks on."""
    return build(tmp_path_factory.mktemp("portrait"), 3, (120, 200), conf=40.0, black=True)


def pose(image: Any) -> Any:
    """pycolmap's cam_from_world, a method in newer releases and a property in older."""
    value = image.cam_from_world
    return value() if callable(value) else value


def check_model(model: Path, built: Built, *, original: bool) -> pycolmap.Reconstruction:
    """A written model read by pycolmap: every camera and point, poses and pixels consistent."""
    found = cameras_from_glb(built.glb)
    rec = pycolmap.Reconstruction(model)
    assert rec.num_cameras() == rec.num_images() == len(found.cameras)
    assert rec.num_points3D() == len(found.points)
    names = sorted(p.name for p in built.images.iterdir())
    for camera in found.cameras:
        image = rec.images[camera.index + 1]
        assert image.name == names[camera.index]
        cam_from_world = pose(image)
        truth = built.predictions["extrinsic"][camera.index].astype(np.float64)
        assert rotation_error_deg(cam_from_world.rotation.matrix(), truth[:, :3]) < 0.001
        colmap_camera = rec.cameras[image.camera_id]
        if original:
            with Image.open(built.images / image.name) as photo:
                assert (colmap_camera.width, colmap_camera.height) == photo.size
        else:
            assert (colmap_camera.width, colmap_camera.height) == (518, camera.height)
        # Each observation is where the camera projects its point (COLMAP's own projection).
        for point2d in list(image.points2D)[:: max(1, len(image.points2D) // 200)]:
            xyz = rec.points3D[point2d.point3D_id].xyz
            projected = colmap_camera.img_from_cam(cam_from_world * xyz)
            assert np.allclose(projected, point2d.xy, atol=2e-3)
    return rec


def test_colmap_model_sized_and_original_models_read_back(portrait: Built, tmp_path: Path) -> None:
    out = export_colmap(portrait.glb, tmp_path / "colmap", images_dir=portrait.images)
    rec = check_model(out / "sparse" / "0", portrait, original=False)
    check_model(out / "sparse_original" / "0", portrait, original=True)
    # The model-sized images are the pixels VGGT saw: their colours are the points' colours.
    found = cameras_from_glb(portrait.glb)
    for camera in found.cameras:
        image = rec.images[camera.index + 1]
        with Image.open(out / "images" / image.name) as saved:
            assert saved.size == (518, 518)
            pixels = np.asarray(saved.convert("RGB"))
        mine = found.point_frame == camera.index
        u, v = found.point_pixel[mine, 0], found.point_pixel[mine, 1]
        truth = (portrait.predictions["images"][camera.index].transpose(1, 2, 0) * 255).astype(
            np.uint8
        )
        assert np.array_equal(truth[v, u], found.colors[mine])
        assert np.abs(pixels[v, u].astype(int) - found.colors[mine].astype(int)).max() <= 1
    # A round trip through pycolmap's own writer keeps every camera and point.
    again = tmp_path / "again"
    again.mkdir()
    rec.write_text(str(again))
    back = pycolmap.Reconstruction(again)
    assert back.num_cameras() == rec.num_cameras()
    assert back.num_images() == rec.num_images()
    assert back.num_points3D() == rec.num_points3D()
    assert sorted(back.points3D) == sorted(rec.points3D)


def test_colmap_without_images_names_frames(tmp_path: Path) -> None:
    built = build(tmp_path, 2, (160, 120))
    out = export_colmap(built.glb, tmp_path / "colmap")
    rec = pycolmap.Reconstruction(out / "sparse" / "0")
    assert sorted(i.name for i in rec.images.values()) == ["frame_0000.png", "frame_0001.png"]
    assert not (out / "sparse_original").exists() and not (out / "images").exists()


def test_colmap_of_one_frame_is_refused_clearly(tmp_path: Path) -> None:
    built = build(tmp_path, 1, (160, 120))
    with pytest.raises(ExportError, match="two or more cameras"):
        export_colmap(built.glb, tmp_path / "colmap")
    assert not (tmp_path / "colmap").exists()


def test_image_count_mismatch_is_refused_and_writes_nothing(
    portrait: Built, tmp_path: Path
) -> None:
    few = tmp_path / "few"
    few.mkdir()
    first = sorted(portrait.images.iterdir())[0]
    (few / first.name).write_bytes(first.read_bytes())
    with pytest.raises(ExportError, match="3 cameras but 1 images"):
        export_colmap(portrait.glb, tmp_path / "out", images_dir=few)
    assert not (tmp_path / "out").exists()


def test_model_images_never_overwrite_the_originals(portrait: Built, tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in portrait.images.iterdir()}
    with pytest.raises(ExportError, match="holds the original photos"):
        export_colmap(portrait.glb, portrait.images.parent, images_dir=portrait.images)
    assert {p.name: p.read_bytes() for p in portrait.images.iterdir()} == before


def test_cameras_json_has_both_conventions(portrait: Built, tmp_path: Path) -> None:
    path = export_cameras_json(portrait.glb, tmp_path, images_dir=portrait.images)
    doc = json.loads(path.read_text())
    assert doc["mode"] == "depth" and doc["source"] == "glb"
    assert {"opencv", "opengl", "world"} <= set(doc["conventions"])
    for entry in doc["cameras"]:
        truth = portrait.predictions["extrinsic"][entry["index"]].astype(np.float64)
        w2c = np.array(entry["opencv"]["world_to_camera"])
        c2w = np.array(entry["opencv"]["camera_to_world"])
        gl = np.array(entry["opengl"]["camera_to_world"])
        assert np.allclose(w2c @ c2w, np.eye(4), atol=1e-9)
        assert rotation_error_deg(w2c[:3, :3], truth[:, :3]) < 0.001
        assert np.allclose(gl[:3, :3], c2w[:3, :3] @ np.diag([1, -1, -1]))
        assert np.allclose(gl[:3, 3], c2w[:3, 3])
        k = np.array(entry["intrinsics_model"]["K"])
        assert np.allclose(k, portrait.predictions["intrinsic"][entry["index"]], rtol=1e-4)
        original = entry["intrinsics_original"]
        assert (original["width"], original["height"]) == (120, 200)
        assert entry["intrinsics_estimated"] is False
        assert entry["residuals"]["pixel_grid_rms_px"] < 0.01


def test_nerfstudio_transforms_follow_its_schema(portrait: Built, tmp_path: Path) -> None:
    path = export_nerfstudio(portrait.glb, tmp_path / "ns", images_dir=portrait.images)
    doc = json.loads(path.read_text())
    # nerfstudio's documented fields: camera_model, frames[].file_path and transform_matrix
    # (camera-to-world, OpenGL axes), intrinsics fl_x fl_y cx cy w h (per frame allowed).
    assert doc["camera_model"] == "OPENCV"
    assert len(doc["frames"]) == 3
    for index, frame in enumerate(doc["frames"]):
        assert (path.parent / frame["file_path"]).is_file()
        matrix = np.array(frame["transform_matrix"])
        assert matrix.shape == (4, 4) and np.allclose(matrix[3], [0, 0, 0, 1])
        truth = portrait.predictions["extrinsic"][index].astype(np.float64)
        c2w_cv = matrix[:3, :3] @ np.diag([1, -1, -1])
        assert rotation_error_deg(c2w_cv.T, truth[:, :3]) < 0.001
        assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(frame)
        assert (frame["w"], frame["h"]) == (518, 518)
    cloud = trimesh.load(path.parent / doc["ply_file_path"])
    assert len(cloud.vertices) == read_glb(portrait.glb).point_count


def test_ply_holds_every_point_and_colour(portrait: Built, tmp_path: Path) -> None:
    path = export_points_ply(portrait.glb, tmp_path)
    cloud = trimesh.load(path)
    scene = read_glb(portrait.glb)
    assert np.allclose(cloud.vertices, scene.points)
    assert np.array_equal(np.asarray(cloud.colors)[:, :3], scene.colors)


def test_run_zip_holds_the_whole_folder_and_nothing_outside(
    portrait: Built, tmp_path: Path
) -> None:
    run = tmp_path / "run_1"
    (run / "images").mkdir(parents=True)
    (run / "metadata.json").write_text('{"id": "run_1"}')
    for image in portrait.images.iterdir():
        (run / "images" / image.name).write_bytes(image.read_bytes())
    (run / "versions" / "v1").mkdir(parents=True)
    (run / "versions" / "v1" / "scene.glb").write_bytes(portrait.glb.read_bytes())
    export_cameras_json(portrait.glb, run / "exports")
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the run")
    os.symlink(secret, run / "link.txt")
    out = export_run_zip(run, tmp_path / "run_1.zip")
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        expected = {
            p.relative_to(run).as_posix()
            for p in run.rglob("*")
            if p.is_file() and not p.is_symlink()
        }
        assert names == expected
        for name in names:
            assert zf.read(name) == (run / name).read_bytes()
    assert "link.txt" not in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vggt_core", "export", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_cli_exports_a_bare_glb(portrait: Built, tmp_path: Path) -> None:
    glb = tmp_path / "download.glb"  # a GLB from the official demo: no run, no storage
    glb.write_bytes(portrait.glb.read_bytes())
    result = run_cli("--glb", str(glb), "--format", "colmap", "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert pycolmap.Reconstruction(tmp_path / "c" / "sparse" / "0").num_images() == 3
    result = run_cli(
        "--glb", str(glb), "--images", str(portrait.images), "--format", "cameras",
        "--out", str(tmp_path / "j"), "--mode", "pointmap", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "cameras"
    doc = json.loads((tmp_path / "j" / "cameras.json").read_text())
    assert doc["mode"] == "pointmap" and all(c["intrinsics_estimated"] for c in doc["cameras"])


def test_cli_says_why_a_damaged_glb_cannot_be_exported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF\x02\x00\x00\x00")
    result = run_cli("--glb", str(bad), "--format", "nerfstudio", "--out", str(tmp_path / "n"))
    assert result.returncode == 1
    assert "bad.glb" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "n").exists()


def test_mixed_shapes_are_padded_as_vggt_pads_them(tmp_path: Path) -> None:
    images = tmp_path / "images"
    paths = write_sample_images(images, count=2, size=(160, 120), prefix="a")
    paths += write_sample_images(images, count=1, size=(120, 200), prefix="b")
    truth = run_stand_in_model(load_and_preprocess_images(sorted(paths)))
    glb = tmp_path / "mixed.glb"
    predictions_to_glb(truth, prediction_mode="Depthmap and Camera Branch").export(glb)
    out = export_colmap(glb, tmp_path / "colmap", images_dir=images)
    built = Built(glb, images, truth)
    check_model(out / "sparse" / "0", built, original=False)
    check_model(out / "sparse_original" / "0", built, original=True)
    for index, path in enumerate(sorted(paths)):
        with Image.open(out / "images" / path.name) as saved:
            pixels = np.asarray(saved.convert("RGB")).astype(int)
        expected = (truth["images"][index].transpose(1, 2, 0) * 255).astype(int)
        assert pixels.shape == expected.shape == (518, 518, 3)
        assert np.abs(pixels - expected).max() <= 1  # white bands above and below included


def test_a_missing_images_folder_is_named(portrait: Built, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_cameras_json(portrait.glb, tmp_path / "out", images_dir=tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()
