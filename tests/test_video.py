"""Video input (frames sampled with PyAV, refusals that store nothing) and honest presize (the
stand-in records the sha256 of every file that arrived), through the service, REST and CLI."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import gradio as gr
import numpy as np
import pytest
from helpers_images import png_bytes, textured
from helpers_server import env_for, vggt_serve
from helpers_video import BLOCK, phone_clip, tkhd_matrix, upright_picture, with_matrix
from PIL import Image
from starlette.testclient import TestClient

from vggt_core import RunStatus, StudioService, VGGTSettings, VideoRejected, load_config
from vggt_core.api import create_api_app
from vggt_core.local_space import StandInOptions, free_port
from vggt_core.local_space._handlers import StandIn
from vggt_core.upload_prep import MASK_SKY_REASON, OTHER_MODEL_REASON
from vggt_core.video import VideoLimits, sample_video

pytest.register_assert_rewrite("app_fixtures")
pytest_plugins = ["app_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
LIMITS = VideoLimits(max_bytes=50 * 2**20, max_seconds=60, max_frames=100)


def clip_bytes(seconds: float = 5, fps: int = 30, size: tuple[int, int] = (64, 48)) -> bytes:
    """An H.264 mp4 whose frame i is flat, red 8·(i mod 30), green 40·(i // 30): its index."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0"}  # lossless enough to read the levels back
        for i in range(round(seconds * fps)):
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[..., 0], pixels[..., 1] = 8 * (i % 30), 40 * (i // 30)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def empty_clip_bytes() -> bytes:
    """A Matroska file with a video track and no frame at all (a zero-length clip)."""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return out.getvalue()


def index(png: bytes) -> int:
    """Which frame of `clip_bytes` this is (colour rounding is far below the steps)."""
    red, green, _ = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).mean(axis=(0, 1))
    return round(red / 8) + 30 * round(green / 40)


def stored(root: Path) -> list[str]:
    """Every file and folder under the runs folder (a refused video must leave none)."""
    runs = root / "runs"
    return sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) if runs.exists() else []


def service_for(root: Path, backend: str, **config: str) -> StudioService:
    settings = load_config({"VGGT_BACKEND": backend, "VGGT_STORAGE_DIR": str(root), **config})
    return StudioService(settings, sweep_interval_s=None)


@pytest.fixture
def service(tmp_path, local_space) -> Iterator[StudioService]:
    service = service_for(tmp_path / "storage", local_space.url)
    yield service
    service.close()


# --- sampling ----------------------------------------------------------------------------------


def test_a_5_s_clip_at_30_fps_gives_5_frames_with_frame_0_kept():
    sampled = sample_video("clip.mp4", clip_bytes(), LIMITS, fps=1.0)
    assert [name for name, _ in sampled.frames] == [f"frame_{i:04d}.png" for i in range(1, 6)]
    assert [index(png) for _, png in sampled.frames] == [0, 30, 60, 90, 120]
    assert sampled.duration_s == pytest.approx(5.0, abs=0.05)
    assert sampled.clip_fps == pytest.approx(30.0)


def test_the_rate_is_the_users():
    sampled = sample_video("clip.mp4", clip_bytes(seconds=2), LIMITS, fps=2.0)
    assert [index(png) for _, png in sampled.frames] == [0, 15, 30, 45]
    slow = sample_video("clip.mp4", clip_bytes(seconds=5), LIMITS, fps=0.5)
    assert [index(png) for _, png in slow.frames] == [0, 60, 120]


@pytest.mark.parametrize(
    ("make", "limits", "fps", "says"),
    [
        (lambda: b"not a video at all " * 50, LIMITS, 1.0, "not a video PyAV can decode"),
        (lambda: b"", LIMITS, 1.0, "the file is empty"),
        (lambda: png_bytes(), LIMITS, 1.0, "not a video"),
        (empty_clip_bytes, LIMITS, 1.0, "no frames|zero seconds"),
        (clip_bytes, VideoLimits(50 * 2**20, 3, 100), 1.0, "over the limit of 3 s"),
        (clip_bytes, VideoLimits(1000, 60, 100), 1.0, "over the limit of"),
        (clip_bytes, VideoLimits(50 * 2**20, 60, 3), 1.0, "choose at most 0.40 a second"),
        (clip_bytes, LIMITS, 0.0, "sampling rate must be from 0.01 to 60"),
    ],
    ids=["garbage", "empty", "a-png", "zero-length", "too-long", "too-big", "too-many", "rate"],
)
def test_bad_videos_are_refused_and_nothing_is_stored(tmp_path, make, limits, fps, says):
    with pytest.raises(VideoRejected, match=says) as refused:
        sample_video("clip.mp4", make(), limits, fps)
    assert str(refused.value).startswith("No run was created. clip.mp4: ")
    service = service_for(
        tmp_path,
        "http://127.0.0.1:9",
        VGGT_MAX_VIDEO_BYTES=str(limits.max_bytes),
        VGGT_MAX_VIDEO_SECONDS=str(limits.max_seconds),
        VGGT_MAX_VIDEO_FRAMES=str(limits.max_frames),
    )
    try:
        with pytest.raises(VideoRejected, match=says):
            service.submit_video(VGGTSettings(), "clip.mp4", make(), fps=fps)
        assert stored(tmp_path) == []
        assert service.run_count() == 0
    finally:
        service.close()


# --- phone clips: frames stored sideways, a turn in the track header ---------------------------

# The clockwise turn a phone writes, and the same as PyAV reports it (counter-clockwise).
PYAV_ROTATION = {0: 0, 90: -90, 180: -180, 270: 90}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_pyav_reads_the_turn_written_in_the_track_header(clockwise):
    clip = phone_clip(clockwise)
    with av.open(io.BytesIO(clip)) as container:
        first = next(container.decode(video=0))
        assert first.rotation == PYAV_ROTATION[clockwise]
    # FFmpeg's own muxer writes the same rotation for that display turn.
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        stream.set_display_rotation(PYAV_ROTATION[clockwise])
        black = np.zeros((first.height, first.width, 3), np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rotation_part = [0, 1, 3, 4]
    ours, ffmpegs = tkhd_matrix(clip), tkhd_matrix(out.getvalue())
    assert [ours[i] for i in rotation_part] == [ffmpegs[i] for i in rotation_part]


@pytest.mark.parametrize(
    ("clockwise", "mirrored"),
    [(0, False), (90, False), (180, False), (270, False), (0, True), (90, True), (270, True)],
    ids=["no-flag", "90", "180", "270", "mirror", "mirror-90", "mirror-270"],
)
def test_a_phone_clip_is_sampled_as_the_phone_showed_it(clockwise, mirrored):
    clip = phone_clip(clockwise, mirrored=mirrored)
    sampled = sample_video("portrait.mp4", clip, LIMITS, fps=1.0)
    assert len(sampled.frames) == 2
    upright = np.asarray(upright_picture(48, 64), dtype=np.int16)
    for _, png in sampled.frames:
        frame = pixels(png)
        assert frame.shape == (64, 48, 3)  # portrait: 48 wide, 64 tall
        top, bottom = frame[:BLOCK], frame[-BLOCK:]
        corners = [top[:, :BLOCK], top[:, -BLOCK:], bottom[:, :BLOCK], bottom[:, -BLOCK:]]
        assert [bool(c.mean() > 200) for c in corners] == [True, False, False, False]
        assert np.abs(frame - upright).max() < 16
    assert sampled.rotation == clockwise


def test_a_clip_with_a_meaningless_matrix_is_sampled_as_stored():
    stored = phone_clip(0, upright=(64, 48))
    for matrix in [(0,) * 8 + (1 << 30,), (1 << 16, 1 << 16, 0, 1 << 16, 1 << 16, 0, 0, 0, 0)]:
        sampled = sample_video("odd.mp4", with_matrix(stored, matrix), LIMITS, fps=1.0)
        assert sampled.rotation == 0
        frame = pixels(sampled.frames[0][1])
        assert frame.shape == (48, 64, 3) and frame[:BLOCK, :BLOCK].mean() > 200


def test_a_phone_clips_run_keeps_upright_frames_and_says_the_turn(service, tmp_path):
    run = service.submit_video(VGGTSettings(), "portrait.mp4", phone_clip(90), fps=1.0)
    run = service.wait(run.run_id, timeout=120)
    assert run.status is RunStatus.completed, run.error
    assert run.video is not None and run.video.rotation == 90
    folder = service.storage_root / "runs" / run.run_id
    saved = json.loads((folder / "metadata.json").read_text())
    assert saved["video"]["rotation"] == 90
    upright = np.asarray(upright_picture(48, 64), dtype=np.int16)
    for name in run.images:
        frame = pixels((folder / "images" / name).read_bytes())
        assert frame.shape == upright.shape and np.abs(frame - upright).max() < 16
    plain = service.submit_video(VGGTSettings(), "plain.mp4", clip_bytes(seconds=1))
    plain = service.wait(plain.run_id, timeout=120)
    assert plain.video is not None and plain.video.rotation == 0


# --- a video run, end to end against the stand-in -----------------------------------------------


def test_a_video_run_keeps_the_clip_and_runs_its_frames(service, local_space, tmp_path):
    clip = tmp_path / "My holiday (1).mp4"
    clip.write_bytes(clip_bytes())
    run = service.submit_video(VGGTSettings(), clip.name, clip, fps=1.0)
    run = service.wait(run.run_id, timeout=120)
    assert run.status is RunStatus.completed, run.error
    assert run.images == [f"frame_{i:04d}.png" for i in range(1, 6)]
    assert run.video is not None
    assert run.video.file_name == "My_holiday_(1).mp4"
    assert (run.video.frame_count, run.video.sample_fps) == (5, 1.0)
    assert run.video.size == clip.stat().st_size
    assert run.video.duration_s == pytest.approx(5.0, abs=0.05)
    kept = service.storage_root / "runs" / run.run_id / "video" / run.video.file_name
    assert kept.read_bytes() == clip.read_bytes()
    upload = next(
        r
        for r in reversed(local_space.received)
        if r["endpoint"] == "/update_gallery_on_upload" and len(r["files"]) == 5
    )
    assert upload["params"]["input_video"] is None  # frames are sampled here, not on the Space
    assert service.get(run.run_id).to_json_dict()["video"]["frameCount"] == 5


def test_old_metadata_without_video_still_loads(tmp_path):
    service = service_for(tmp_path, "http://127.0.0.1:9")
    try:
        run = service.create_run(VGGTSettings())
        path = tmp_path / "runs" / run.run_id / "metadata.json"
        data = json.loads(path.read_text())
        data.pop("video", None)
        data["upload"] = {"bytesSent": 5, "bytesOriginal": 9, "filesResized": 1}
        path.write_text(json.dumps(data))
        loaded = service.get(run.run_id)
        assert loaded.video is None and loaded.upload is not None
        assert loaded.upload.originals_reason is None
    finally:
        service.close()


# --- REST and CLI ---------------------------------------------------------------------------


def test_rest_video_run_and_refusal(service, tmp_path):
    app = create_api_app(service, close_on_shutdown=False)
    with TestClient(app, base_url="http://127.0.0.1:8600", client=("127.0.0.1", 5000)) as api:
        form = {"settings": json.dumps({"confThreshold": 30, "maskSky": True}), "fps": "2"}
        answer = api.post(
            "/api/videos", data=form, files=[("video", ("clip.mp4", clip_bytes(seconds=2)))]
        )
        assert answer.status_code == 202, answer.text
        run = service.wait(answer.json()["runId"], timeout=120)
        assert run.status is RunStatus.completed, run.error
        assert len(run.images) == 4 and run.video is not None and run.video.sample_fps == 2
        assert run.settings.conf_threshold == 30 and run.settings.mask_sky

        before = stored(service.storage_root)
        bad = api.post("/api/videos", files=[("video", ("clip.mp4", b"garbage" * 99))])
        assert bad.status_code == 400
        assert bad.json()["error"] == "Video rejected"
        assert bad.json()["details"][0]["file"] == "clip.mp4"
        assert "not a video PyAV can decode" in bad.json()["details"][0]["reason"]
        wrong = api.post(
            "/api/videos",
            data={"fps": "0"},
            files=[("video", ("clip.mp4", clip_bytes(seconds=1)))],
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "Invalid settings"
        assert stored(service.storage_root) == before
        spec = api.get("/api/openapi.json").json()
        assert "/api/videos" in spec["paths"]


def test_cli_submits_a_video_and_refuses_a_bad_one(local_space, tmp_path):
    clip = tmp_path / "walk.mov"
    clip.write_bytes(clip_bytes(seconds=3))
    env = {
        "VGGT_BACKEND": local_space.url,
        "VGGT_STORAGE_DIR": str(tmp_path / "storage"),
        "PATH": "/usr/bin:/bin",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    command = [sys.executable, "-m", "vggt_core", "submit", "--json", "--wait"]
    done = subprocess.run(
        [*command, "--video", str(clip), "--fps", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "completed"
    assert run["images"] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    assert run["video"]["fileName"] == "walk.mov"

    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00" * 4096)
    refused = subprocess.run(
        [*command, "--video", str(garbage)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 1
    assert "broken.mp4: it is not a video PyAV can decode" in refused.stderr
    runs = tmp_path / "storage" / "runs"
    assert len([p for p in runs.iterdir() if p.name.startswith("run_")]) == 1

    both = subprocess.run(
        [*command, str(clip), "--video", str(clip)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode == 2 and "not both" in both.stderr


# --- the stand-in's video quirks ---------------------------------------------------------------


def test_the_stand_in_samples_like_the_space(local_space, make_client, tmp_path):
    from gradio_client import handle_file

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clip_bytes(seconds=3))
    photo = tmp_path / "a_photo.png"
    textured(64, 48).save(photo)
    client = make_client(local_space.url)
    gallery = client.predict(
        input_video=handle_file(str(clip)),
        input_images=[handle_file(str(photo))],
        api_name="/update_gallery_on_upload",
    )[2]
    names = [item["image"]["orig_name"] for item in gallery]
    # Every 30th frame counting from 1 (frames 29, 59, 89: the first frame is skipped), named
    # 000000.png … and sorted together with the user's own file.
    assert names == ["000000.png", "000001.png", "000002.png", "a_photo.png"]
    target = (
        local_space.stand_in.workdir
        / client.predict(
            input_video=handle_file(str(clip)),
            input_images=None,
            api_name="/update_gallery_on_upload",
        )[1]
    )
    kept = [index(p.read_bytes()) for p in sorted((target / "images").iterdir())]
    assert kept == [29, 59, 89]


def test_the_stand_in_divides_by_zero_under_1_fps(local_space, make_client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    clip = tmp_path / "slow.mp4"
    clip.write_bytes(clip_bytes(seconds=4, fps=1))
    clip_half = tmp_path / "half.webm"
    with av.open(str(clip_half), "w") as container:
        stream = container.add_stream("libvpx", rate=io_rate(0.5))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    client = make_client(local_space.url)
    with pytest.raises(AppError):
        client.predict(
            input_video=handle_file(str(clip_half)),
            input_images=None,
            api_name="/update_gallery_on_upload",
        )
    with local_space.override(faithful_video=False):
        gallery = client.predict(
            input_video=handle_file(str(clip_half)),
            input_images=None,
            api_name="/update_gallery_on_upload",
        )[2]
    assert len(gallery) == 3


def io_rate(value: float):
    from fractions import Fraction

    return Fraction(value).limit_denominator(1000)


# --- presize, honestly ----------------------------------------------------------------------


def big_photos(folder: Path, count: int = 2) -> list[tuple[str, bytes]]:
    files = []
    for i in range(count):
        out = io.BytesIO()
        textured(1200, 900, seed=i).save(out, format="PNG")
        files.append((f"photo_{i}.png", out.getvalue()))
    return files


def arrived(space_received: list[dict], since: int) -> set[str]:
    uploads = [r for r in space_received[since:] if r["endpoint"] == "/update_gallery_on_upload"]
    assert len(uploads) == 1
    return {f["sha256"] for f in uploads[0]["files"]}


def test_mask_sky_sends_the_originals(service, local_space, tmp_path):
    photos = big_photos(tmp_path)
    originals = {hashlib.sha256(data).hexdigest() for _, data in photos}

    since = len(local_space.received)
    run = service.submit(VGGTSettings(mask_sky=True), photos, presize=True)
    run = service.wait(run.run_id, timeout=120)
    assert run.status is RunStatus.completed, run.error
    assert arrived(local_space.received, since) == originals
    assert run.upload is not None and run.upload.files_resized == 0
    assert run.upload.originals_reason == MASK_SKY_REASON

    since = len(local_space.received)
    plain = service.wait(service.submit(VGGTSettings(), photos).run_id, timeout=120)
    assert plain.status is RunStatus.completed, plain.error
    assert arrived(local_space.received, since).isdisjoint(originals)  # presized
    assert plain.upload is not None and plain.upload.originals_reason is None


def omega_like_space(workdir: Path) -> tuple[StandIn, gr.Blocks, str]:
    """A real Gradio app with the Space's upload endpoint but a /gradio_demo without
    `prediction_mode` and `frame_filter` (like facebook/vggt-omega's)."""
    stand_in = StandIn(StandInOptions(), workdir)
    with gr.Blocks(analytics_enabled=False) as demo:
        video = gr.Video()
        files = gr.File(file_count="multiple")
        target, log = gr.Textbox(), gr.Textbox()
        gallery, model = gr.Gallery(), gr.Model3D()
        video.change(
            stand_in.update_gallery_on_upload,
            [video, files],
            [model, target, gallery, log],
            api_name="update_gallery_on_upload",
        )
        conf = gr.Slider(0, 100)
        checks = [gr.Checkbox() for _ in range(4)]

        def reconstruct(target_dir, conf_thres, mask_black_bg, mask_white_bg, show_cam, mask_sky):
            return None, "no"

        gr.Button().click(
            reconstruct, [target, conf, *checks], [model, log], api_name="gradio_demo"
        )
    demo.queue()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return stand_in, demo, f"http://127.0.0.1:{port}"


def test_another_models_api_gets_the_originals(tmp_path):
    stand_in, demo, url = omega_like_space(tmp_path / "space")
    service = service_for(tmp_path / "storage", url)
    try:
        photos = big_photos(tmp_path)
        run = service.wait(service.submit(VGGTSettings(), photos).run_id, timeout=120)
        deadline = time.monotonic() + 60
        while not stand_in.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert arrived(stand_in.received, 0) == {
            hashlib.sha256(data).hexdigest() for _, data in photos
        }
        assert run.upload is not None and run.upload.originals_reason == OTHER_MODEL_REASON
        # This app cannot drive that model yet: the run says so in plain words.
        assert run.status is RunStatus.failed
        assert "lacks the parameter(s) frame_filter, prediction_mode" in (run.error or "")
    finally:
        service.close()
        demo.close()


# --- the New run page: the video path, the quota notice, the EXIF badge ------------------------


def test_page_samples_an_uploaded_video_and_runs_it(app_env):
    from app_fixtures import NEW_RUN, button, open_page, page_text, run_until, texts

    at = open_page(NEW_RUN)
    at.segmented_control(key="vs_source").set_value("Video")
    at.run()
    assert button(at, "Reconstruct").disabled
    at.file_uploader[0].set_value(("walk.mp4", clip_bytes(), "video/mp4"))
    at.run()
    assert not at.exception and not at.error
    assert "**5 frames** will be sampled (1 a second, the first frame kept)" in page_text(at)
    at.number_input(key="vs_fps").set_value(2.0)
    at.run()
    assert "**10 frames** will be sampled (2 a second" in page_text(at)
    button(at, "Reconstruct").click()
    at.run()
    assert not at.exception
    assert any("sampled from walk.mp4" in s for s in texts(at.success))
    [run_id] = app_env.store.run_ids()
    run_until(at, lambda _: not app_env.store.load(run_id).is_active, timeout=120)
    run = app_env.store.load(run_id)
    assert run.status is RunStatus.completed, run.error
    assert len(run.images) == 10 and run.video is not None and run.video.sample_fps == 2.0


def test_page_refuses_a_bad_video_before_any_run(app_env):
    from app_fixtures import NEW_RUN, button, open_page, texts

    at = open_page(NEW_RUN)
    at.segmented_control(key="vs_source").set_value("Video")
    at.run()
    at.file_uploader[0].set_value(("broken.mp4", b"\x00" * 5000, "video/mp4"))
    at.run()
    assert any("broken.mp4" in e and "not a video PyAV can decode" in e for e in texts(at.error))
    assert button(at, "Reconstruct").disabled
    assert app_env.store.run_ids() == []


def test_quota_notice_on_the_public_space_only(app_env, monkeypatch):
    from app_fixtures import NEW_RUN, open_page, page_text

    assert "CC BY-NC 4.0" not in page_text(open_page(NEW_RUN))  # a URL backend: no notice

    monkeypatch.setenv("VGGT_BACKEND", "facebook/vggt")
    text = page_text(open_page(NEW_RUN))
    assert "**120 s** of GPU" in text and "anonymous" in text
    assert "costs no GPU quota" in text and "shared machine" in text and "CC BY-NC 4.0" in text
    assert text.count("CC BY-NC 4.0") == 1  # said once, not once per copy of the block

    secret = "hf_notARealTokenButLongEnough1234"
    monkeypatch.setenv("HF_TOKEN", secret)
    text = page_text(open_page(NEW_RUN))
    assert "An HF token is set" in text and secret not in text


def test_exif_rotated_photos_are_badged(app_env):
    from app_fixtures import NEW_RUN, open_page

    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    textured(64, 48).save(rotated, format="JPEG", exif=exif)
    upright = io.BytesIO()
    textured(64, 48, seed=1).save(upright, format="JPEG")
    at = open_page(NEW_RUN)
    at.file_uploader[0].set_value(
        [
            ("turned.jpg", rotated.getvalue(), "image/jpeg"),
            ("plain.jpg", upright.getvalue(), "image/jpeg"),
        ]
    )
    at.run()
    captions = {c.split(" · ")[0]: c for image in at.image for c in image.captions}
    assert "EXIF-rotated: VGGT sees it sideways" in captions["turned.jpg"]
    assert "EXIF" not in captions["plain.jpg"]


def test_cli_server_path_posts_the_video_to_the_api(local_space, tmp_path):
    server = vggt_serve(tmp_path, tmp_path / "storage", local_space.url)
    try:
        env = env_for(tmp_path / "unused-storage", "http://127.0.0.1:9")
        command = [sys.executable, "-m", "vggt_core", "submit", "--json", "--server", server.url]

        def submit(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, *args],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )

        clip = tmp_path / "escape attempt.webm"
        clip.write_bytes(phone_clip(90))  # an mp4 inside: the container counts
        done = submit("--video", str(clip), "--fps", "2", "--no-presize", "--no-cameras", "--wait")
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert run["status"] == "completed", run.get("error")
        assert run["presize"] is False and run["settings"]["showCameras"] is False
        assert run["video"]["frameCount"] == 4 and run["video"]["rotation"] == 90

        broken = tmp_path / "broken.mkv"
        broken.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 100)
        refused = submit("--video", str(broken))
        assert refused.returncode == 1 and "broken.mkv" in refused.stderr
        assert [p.name for p in (server.storage / "runs").glob("run_*")] == [run["runId"]]
        assert not (tmp_path / "unused-storage").exists()
    finally:
        server.stop()


def test_a_hostile_file_name_stays_inside_the_run(service):
    run = service.submit_video(VGGTSettings(), "../../../etc/evil\nname.mp4", clip_bytes(seconds=1))
    folder = service.storage_root / "runs" / run.run_id
    assert run.video is not None and "/" not in run.video.file_name
    assert [p.name for p in (folder / "video").iterdir()] == [run.video.file_name]
    assert not (service.storage_root / "etc").exists()
    service.wait(run.run_id, timeout=120)


def test_history_detail_says_why_the_originals_were_sent(app_env, side_executor):
    from app_fixtures import HISTORY, open_page, page_text

    photos = [(name, data) for name, data in big_photos(app_env.storage.parent, 1)]
    run = side_executor.submit(VGGTSettings(mask_sky=True), photos, presize=True)
    run = side_executor.wait(run.run_id, timeout=120)
    assert run.status is RunStatus.completed, run.error
    text = page_text(open_page(HISTORY, run=run.run_id))
    assert "Sent the original files" in text
    assert "Mask sky was on: the Space computes the sky mask from the uploaded files" in text


@pytest.mark.parametrize(
    ("fmt", "codec"), [("matroska", "libx264"), ("webm", "libvpx-vp9"), ("mov", "libx264")]
)
def test_every_accepted_container_is_sampled(fmt, codec):
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(75):
            pixels = np.full((48, 64, 3), i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    sampled = sample_video(f"clip.{fmt}", out.getvalue(), LIMITS, fps=1.0)
    assert len(sampled.frames) == 3 and sampled.duration_s == pytest.approx(3.0, abs=0.05)
