"""The local stand-in for the facebook/vggt Space, driven through a real gradio_client."""

import io
import os
import time
from concurrent.futures import CancelledError
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from vggt_core.local_space import (
    DEPTH_MODE,
    NO_TARGET_DIR,
    POINTMAP_MODE,
    PREDICTION_KEYS,
    ZEROGPU_QUOTA_ERROR,
    LocalSpace,
    StandInOptions,
    build_parser,
    glb_file_name,
    load_and_preprocess_images,
    run_stand_in_model,
    write_sample_images,
)

SETTINGS = [
    "target_dir",
    "conf_thres",
    "frame_filter",
    "mask_black_bg",
    "mask_white_bg",
    "show_cam",
    "mask_sky",
    "prediction_mode",
]
# Non-default everywhere the UI has a default (50, False, False, True, False, Depthmap).
CUSTOM = {
    "conf_thres": 35.0,
    "frame_filter": "All",
    "mask_black_bg": True,
    "mask_white_bg": True,
    "show_cam": True,
    "mask_sky": True,
    "prediction_mode": POINTMAP_MODE,
}
PLAIN = {
    "conf_thres": 50.0,
    "frame_filter": "All",
    "mask_black_bg": False,
    "mask_white_bg": False,
    "show_cam": False,
    "mask_sky": False,
    "prediction_mode": DEPTH_MODE,
}


def upload(client: Client, paths: list[Path]) -> tuple:
    return client.predict(
        input_video=None,
        input_images=[handle_file(str(p)) for p in paths],
        api_name="/update_gallery_on_upload",
    )


def reconstruct(client: Client, target_dir: str, **settings: object) -> tuple:
    return client.predict(target_dir=target_dir, **settings, api_name="/gradio_demo")


def visualize(client: Client, target_dir: str, **settings: object) -> tuple:
    return client.predict(
        target_dir=target_dir, **settings, is_example="False", api_name="/update_visualization"
    )


def fetch(file_output: dict) -> bytes:
    response = httpx.get(file_output["url"], timeout=30)
    response.raise_for_status()
    return response.content


def load_glb(file_output: dict) -> trimesh.Scene:
    return trimesh.load(io.BytesIO(fetch(file_output)), file_type="glb")


def points_and_cones(scene: trimesh.Scene) -> tuple[np.ndarray, int]:
    clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    cones = sum(isinstance(g, trimesh.Trimesh) for g in scene.geometry.values())
    assert len(clouds) == 1
    return np.asarray(clouds[0].vertices), cones


@pytest.fixture(scope="module")
def session(local_space: LocalSpace, tmp_path_factory: pytest.TempPathFactory):
    """One client session that uploaded three images and reconstructed them with CUSTOM."""
    images = write_sample_images(tmp_path_factory.mktemp("session_upload"))
    client = Client(local_space.url, token=False, download_files=False, verbose=False)
    uploaded = upload(client, images)
    result = reconstruct(client, uploaded[1], **CUSTOM)
    yield {"client": client, "images": images, "upload": uploaded, "result": result}
    client.close()


def test_view_api_lists_the_space_endpoints(local_space: LocalSpace, make_client) -> None:
    api = make_client(local_space.url).view_api(return_format="dict", print_info=False)
    endpoints = api["named_endpoints"]

    def names(endpoint: str) -> list[str]:
        return [p["parameter_name"] for p in endpoints[endpoint]["parameters"]]

    def returns(endpoint: str) -> list[str]:
        return [r["component"] for r in endpoints[endpoint]["returns"]]

    assert names("/update_gallery_on_upload") == ["input_video", "input_images"]
    assert returns("/update_gallery_on_upload") == ["Model3d", "Textbox", "Gallery", "Markdown"]
    assert names("/gradio_demo") == SETTINGS
    assert returns("/gradio_demo") == ["Model3d", "Markdown", "Dropdown"]
    assert names("/update_visualization") == [*SETTINGS, "is_example"]
    assert returns("/update_visualization") == ["Model3d", "Markdown"]
    copies = {f"/update_visualization_{i}" for i in range(1, 7)} | {"/update_gallery_on_upload_1"}
    plumbing = {"/clear_fields", "/update_log", "/lambda"}
    assert copies | plumbing <= set(endpoints)
    assert len(endpoints) == 3 + len(copies) + len(plumbing)
    video = endpoints["/update_gallery_on_upload"]["parameters"][0]
    assert video["component"] == "Video"
    assert set(video["type"]["properties"]) == {"video", "subtitles"}  # the Space's Gradio 5 shape


def test_upload_copies_images_and_records_their_bytes(
    local_space: LocalSpace, session: dict
) -> None:
    _, target_dir, gallery, message = session["upload"]
    assert target_dir.startswith("input_images_")
    assert message.startswith("Upload complete")
    images = session["images"]
    assert [item["image"]["orig_name"] for item in gallery] == [p.name for p in images]
    stored = sorted((local_space.workdir / target_dir / "images").iterdir())
    assert [p.read_bytes() for p in stored] == [p.read_bytes() for p in images]

    mine = [r for r in local_space.received if r["session_hash"] == session["client"].session_hash]
    record = mine[0]
    assert record["endpoint"] == "/update_gallery_on_upload"
    assert record["params"] == {"input_video": None, "input_images": [p.name for p in images]}
    assert [(f["name"], f["size"]) for f in record["files"]] == [
        (p.name, p.stat().st_size) for p in images
    ]


def test_reconstruct_returns_a_glb_built_from_the_settings(
    local_space: LocalSpace, session: dict
) -> None:
    target_dir = session["upload"][1]
    glb, message, dropdown = session["result"]
    assert message == "Reconstruction Success (3 frames). Waiting for visualization."
    assert glb["orig_name"] == glb_file_name(**CUSTOM)
    assert dropdown["choices"][1:] == [[f"{i}: img_{i:03d}.png"] * 2 for i in range(3)]
    points, cones = points_and_cones(scene := load_glb(glb))
    assert len(points) > 10_000 and cones == 3
    node = scene.graph.nodes_geometry[0]
    assert not np.allclose(scene.graph[node][0], np.eye(4))  # the scene-wide alignment

    mine = [r for r in local_space.received if r["session_hash"] == session["client"].session_hash]
    demo_call = next(r for r in mine if r["endpoint"] == "/gradio_demo")
    assert demo_call["params"] == {"target_dir": target_dir, **CUSTOM}
    saved = np.load(local_space.workdir / target_dir / "predictions.npz")
    assert set(saved.files) == set(PREDICTION_KEYS)


def test_update_visualization_refilters_without_the_model(
    local_space: LocalSpace, session: dict
) -> None:
    client, target_dir = session["client"], session["upload"][1]
    npz = local_space.workdir / target_dir / "predictions.npz"
    written = npz.stat().st_mtime_ns

    def cloud(**changes: object) -> tuple[np.ndarray, int]:
        glb, message = visualize(client, target_dir, **{**PLAIN, **changes})
        assert message == "Updating Visualization"
        return points_and_cones(load_glb(glb))

    plain, no_cones = cloud()
    assert no_cones == 0
    with_cameras, cones = cloud(show_cam=True)
    assert len(with_cameras) == len(plain) and cones == 3
    assert len(cloud(conf_thres=80.0)[0]) < len(plain)
    every = len(cloud(conf_thres=0.0)[0])
    assert every == 3 * 392 * 518
    # The sky mask zeroes confidence before the percentile cut, as VGGT's does: compare at 0 %.
    assert len(cloud(conf_thres=0.0, mask_sky=True)[0]) < every
    assert len(cloud(conf_thres=0.0, mask_black_bg=True, mask_white_bg=True)[0]) < every
    pointmap = cloud(prediction_mode=POINTMAP_MODE)[0]
    assert pointmap.shape != plain.shape or not np.allclose(pointmap, plain)
    # A per-frame filter is accepted in the session that ran /gradio_demo.
    one_frame, one_cone = cloud(frame_filter="1: img_001.png", show_cam=True)
    assert one_cone == 1 and abs(len(one_frame) - len(plain) / 3) < len(plain) * 0.1
    assert npz.stat().st_mtime_ns == written


def test_invalid_target_dir_gives_no_glb(local_space: LocalSpace, make_client) -> None:
    glb, message, _ = reconstruct(make_client(local_space.url), "input_images_missing", **PLAIN)
    assert glb is None and message == NO_TARGET_DIR


def test_error_option_raises_app_error_until_cleared(
    local_space: LocalSpace, session: dict
) -> None:
    client, target_dir = session["client"], session["upload"][1]
    with local_space.override(error=ZEROGPU_QUOTA_ERROR):
        for _ in range(2):
            with pytest.raises(AppError) as failure:
                reconstruct(client, target_dir, **PLAIN)
            assert ZEROGPU_QUOTA_ERROR in str(failure.value)
    assert reconstruct(client, target_dir, **PLAIN)[0] is not None


def test_fail_times_fails_once_then_succeeds(local_space: LocalSpace, session: dict) -> None:
    client, target_dir = session["client"], session["upload"][1]
    with local_space.override(error="No GPU was available", fail_times=1):
        with pytest.raises(AppError, match="No GPU was available"):
            reconstruct(client, target_dir, **PLAIN)
        assert reconstruct(client, target_dir, **PLAIN)[1].startswith("Reconstruction Success")


def test_progress_steps_are_reported_during_the_delay(
    local_space: LocalSpace, session: dict
) -> None:
    client, target_dir = session["client"], session["upload"][1]
    with local_space.override(delay=0.6, progress_steps=3):
        started = time.monotonic()
        job = client.submit(target_dir=target_dir, **PLAIN, api_name="/gradio_demo")
        seen = set()
        while not job.done():
            assert time.monotonic() - started < 60, "the job never finished"
            for unit in job.status().progress_data or []:
                seen.add((unit.index, unit.length))
            time.sleep(0.02)
        assert job.result()[0] is not None
    assert time.monotonic() - started >= 0.6
    assert seen >= {(1, 3), (2, 3)}


def test_predictions_output_only_when_enabled(
    local_space: LocalSpace, make_client, sample_image_paths: list[Path]
) -> None:
    plain_api = make_client(local_space.url).view_api(return_format="dict", print_info=False)
    assert len(plain_api["named_endpoints"]["/gradio_demo"]["returns"]) == 3
    with LocalSpace(StandInOptions(return_predictions=True)) as space:
        client = make_client(space.url)
        api = client.view_api(return_format="dict", print_info=False)
        returns = api["named_endpoints"]["/gradio_demo"]["returns"]
        assert [r["component"] for r in returns] == ["Model3d", "Markdown", "Dropdown", "File"]
        target_dir = upload(client, sample_image_paths)[1]
        _, _, _, npz = reconstruct(client, target_dir, **PLAIN)
        predictions = np.load(io.BytesIO(fetch(npz)))
        s, h, w = 3, 392, 518  # 160×120 → width 518, height round(120·518/160/14)·14
        expected = {
            "pose_enc": (s, 9),
            "depth": (s, h, w, 1),
            "depth_conf": (s, h, w),
            "world_points": (s, h, w, 3),
            "world_points_conf": (s, h, w),
            "images": (s, 3, h, w),
            "extrinsic": (s, 3, 4),
            "intrinsic": (s, 3, 3),
            "world_points_from_depth": (s, h, w, 3),
        }
        assert {k: predictions[k].shape for k in predictions.files} == expected
        assert all(predictions[k].dtype == np.float32 for k in predictions.files)
        assert np.allclose(predictions["extrinsic"][0], np.eye(3, 4), atol=1e-6)


def test_video_frames_one_per_second_and_both_payload_shapes(
    local_space: LocalSpace, make_client, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)) for _ in range(7)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=500, loop=0)
    client = make_client(local_space.url)
    # 2 frames a second: the real demo keeps every 2nd frame, counting from 1 (frames 2, 4, 6).
    for video in ({"video": handle_file(str(gif)), "subtitles": None}, handle_file(str(gif))):
        gallery = client.predict(
            input_video=video, input_images=None, api_name="/update_gallery_on_upload"
        )[2]
        assert [item["image"]["orig_name"] for item in gallery] == [
            "000000.png",
            "000001.png",
            "000002.png",
        ]
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x18ftypmp42 not decodable here")
    with pytest.raises(AppError, match="cannot decode the video"):
        client.predict(
            input_video=handle_file(str(mp4)),
            input_images=None,
            api_name="/update_gallery_on_upload",
        )


def test_child_process_control_file_record_exit_and_stop(
    spawn_space, make_client, sample_image_paths: list[Path]
) -> None:
    space = spawn_space(StandInOptions(error=ZEROGPU_QUOTA_ERROR))
    client = make_client(space.url)
    target_dir = upload(client, sample_image_paths)[1]
    with pytest.raises(AppError, match="GPU quota"):
        reconstruct(client, target_dir, **PLAIN)
    space.set_options(error=None)  # another process flips it to healthy
    assert reconstruct(client, target_dir, **CUSTOM)[1].startswith("Reconstruction Success")

    records = space.received
    assert [r["endpoint"] for r in records] == [
        "/update_gallery_on_upload",
        "/gradio_demo",
        "/gradio_demo",
    ]
    assert [f["size"] for f in records[0]["files"]] == [
        p.stat().st_size for p in sample_image_paths
    ]
    assert records[2]["params"] == {"target_dir": target_dir, **CUSTOM}

    space.set_options(delay=5.0, exit_after=0.3, exit_code=3)
    with pytest.raises(CancelledError):
        reconstruct(client, target_dir, **PLAIN)
    assert space.process.wait(10) == 3
    space.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(space.pid, 0)  # nothing left in its process group


def test_preprocessing_matches_vggt_crop_mode(tmp_path: Path) -> None:
    Image.new("RGB", (160, 120), (10, 20, 30)).save(tmp_path / "a.png")
    Image.new("RGBA", (100, 300), (0, 0, 0, 0)).save(tmp_path / "b.png")  # tall, transparent
    wide = load_and_preprocess_images([tmp_path / "a.png"])
    assert wide.shape == (1, 3, 392, 518) and wide.dtype == np.float32
    tall = load_and_preprocess_images([tmp_path / "b.png"])
    assert tall.shape == (1, 3, 518, 518)  # height 1554 centre-cropped to 518
    assert np.allclose(tall, 1.0)  # transparent pixels composited on white
    mixed = load_and_preprocess_images([tmp_path / "a.png", tmp_path / "b.png"])
    assert mixed.shape == (2, 3, 518, 518)
    assert np.allclose(mixed[0, :, :63], 1.0)  # the shorter image is padded with white


def test_stand_in_geometry_is_consistent(sample_image_paths: list[Path]) -> None:
    predictions = run_stand_in_model(load_and_preprocess_images(sample_image_paths))
    extrinsic, intrinsic = predictions["extrinsic"][2], predictions["intrinsic"][2]
    world = predictions["world_points_from_depth"][2].reshape(-1, 3)
    camera = world @ extrinsic[:, :3].T + extrinsic[:, 3]
    assert np.allclose(camera[:, 2], predictions["depth"][2].reshape(-1), atol=1e-4)
    pixels = camera @ intrinsic.T
    v, u = np.mgrid[0:392, 0:518]
    assert np.allclose(
        pixels[:, :2] / pixels[:, 2:], np.stack([u, v], -1).reshape(-1, 2), atol=1e-2
    )
    assert (predictions["depth_conf"] >= 1).all() and (predictions["world_points_conf"] >= 1).all()
    again = run_stand_in_model(load_and_preprocess_images(sample_image_paths))
    assert all(np.array_equal(predictions[k], again[k]) for k in PREDICTION_KEYS)


def test_options_round_trip_through_cli_flags() -> None:
    options = StandInOptions(
        delay=1.5,
        progress_steps=4,
        error=ZEROGPU_QUOTA_ERROR,
        fail_times=2,
        exit_after=0.5,
        exit_code=7,
        return_predictions=True,
        queue_max_size=3,
        concurrency_limit=2,
    )
    args = build_parser().parse_args(options.to_args())
    assert (args.delay, args.progress_steps, args.error, args.fail_times) == (
        1.5,
        4,
        ZEROGPU_QUOTA_ERROR,
        2,
    )
    assert (args.exit_after, args.exit_code, args.return_predictions) == (0.5, 7, True)
    assert (args.max_size, args.concurrency_limit) == (3, 2)
    with pytest.raises(ValueError, match="fail_times"):
        StandInOptions(fail_times=-1)
