"""The Space's endpoint handlers (StandIn): uploads, the stand-in reconstruction, re-filtering."""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import av.error
import gradio as gr
import numpy as np
from PIL import Image

from ._glb_writer import _write_glb, glb_file_name
from ._model import load_and_preprocess_images, run_stand_in_model
from ._options import RUNTIME_FIELDS, StandInOptions

# One logger for the whole package: vggt_core.local_space.
log = logging.getLogger(__package__)

UPLOAD_MESSAGE = "Upload complete. Click 'Reconstruct' to begin 3D processing."
NO_RECONSTRUCTION = "No reconstruction available. Please click the Reconstruct button first."
NO_TARGET_DIR = "No valid target directory found. Please upload first."


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


def extract_video_frames(
    video_path: str | Path, images_dir: Path, *, faithful: bool = True
) -> list[Path]:
    """The Space's sampling, decoded with PyAV: every int(fps)-th frame counting from 1 (so the
    first frame is skipped), as 000000.png, 000001.png, …; a clip under 1 fps divides by zero
    as the Space does unless `faithful` is off (then every frame is kept)."""
    refused = f"The local stand-in cannot decode the video {Path(video_path).name!r}."
    try:
        container = av.open(str(video_path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise gr.Error(refused) from exc
    paths: list[Path] = []
    with container:
        if not container.streams.video:
            raise gr.Error(refused)
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        interval = int(fps * 1)  # the Space: frame_interval = int(fps * 1)
        if interval < 1 and not faithful:
            interval = 1
        count = 0
        try:
            for frame in container.decode(stream):
                count += 1
                if count % interval == 0:  # ZeroDivisionError below 1 fps, like the Space
                    path = images_dir / f"{len(paths):06}.png"
                    Image.fromarray(frame.to_ndarray(format="rgb24")).save(path)
                    paths.append(path)
        except av.error.FFmpegError as exc:
            raise gr.Error(f"The local stand-in cannot decode the video: {exc}") from exc
    return paths


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
            faithful = self.current_options()[0].faithful_video
            image_paths += extract_video_frames(input_video, images_dir, faithful=faithful)
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
            raise gr.Error(options.error or "The stand-in was told to fail.")
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
        np.savez(predictions_path, **predictions)  # type: ignore[arg-type]  # numpy's stub

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
        options, _ = self.current_options()
        if options.render_delay:
            time.sleep(options.render_delay)  # a busy Space CPU, seen as a slow handler
        if is_example == "True" or options.forget:
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
