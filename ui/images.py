"""Uploaded and stored images: checks before a run exists, and thumbnails."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from PIL import Image, ImageOps

from vggt_core import (
    ImageRejected,
    StorageError,
    StudioService,
    VideoRejected,
    exif_rotation,
    probe_video,
)
from vggt_core.upload_prep import release_freed_memory

from .common import THUMB_PX, fmt_bytes, md_escape

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

VIDEO_TYPES = ["mp4", "mov", "webm", "mkv"]

# --- images ---------------------------------------------------------------------------------


def _thumbnail(data: bytes) -> bytes | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a fraction
            thumb = ImageOps.exif_transpose(image)
            thumb.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            thumb.convert("RGB").save(out, format="JPEG", quality=80)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@st.cache_data(max_entries=2000, show_spinner=False)
def _upload_thumbnail(file_id: str, _data: bytes) -> bytes | None:
    # Keyed by the upload's id rather than its bytes: hashing every photo on each rerun is slow.
    return _thumbnail(_data)


@st.cache_data(max_entries=2000, show_spinner=False)
def _file_thumbnail(path: str, mtime_ns: int, size: int) -> bytes | None:
    try:
        return _thumbnail(Path(path).read_bytes())
    except OSError:
        return None


@st.cache_data(max_entries=2000, show_spinner=False)
def _upload_rotation(file_id: str, _data: bytes) -> str | None:
    return exif_rotation(_data)


@st.cache_data(max_entries=2000, show_spinner=False)
def _file_rotation(path: str, mtime_ns: int, size: int) -> str | None:
    try:
        return exif_rotation(Path(path).read_bytes())
    except OSError:
        return None


def rotation_badge(rotation: str | None) -> str:
    """` · ⚠ EXIF-rotated …` for a photo shown upright here that VGGT sees as stored."""
    if rotation is None:
        return ""
    return f" · ⚠ EXIF-rotated: VGGT sees it {rotation}"


@st.cache_data(max_entries=2000, show_spinner=False)
def _check_upload(file_id: str, name: str, _data: bytes, _service: StudioService) -> str | None:
    # Keyed by the upload's id: a file is decoded once, not on every rerun of the page.
    try:
        _service.check_image(name, _data)
    except ImageRejected as exc:
        return exc.reason
    return None


@dataclass(frozen=True)
class UploadReview:
    """Uploaded files split into the ones that can be sent and per-file refusals."""

    accepted: list[UploadedFile]
    rejected: list[tuple[str, str]]


def review_uploads(files: Sequence[UploadedFile], service: StudioService) -> UploadReview:
    """Check each uploaded file as the store will; files past the per-run limit are refused."""
    accepted: list[UploadedFile] = []
    rejected: list[tuple[str, str]] = []
    limit = service.max_images_per_run
    for f in files:
        reason = _check_upload(f.file_id, f.name, f.getvalue(), service)
        if reason is not None:
            rejected.append((f.name, reason))
        elif len(accepted) >= limit:
            rejected.append((f.name, f"too many files: a run holds at most {limit}"))
        else:
            accepted.append(f)
    return UploadReview(accepted, rejected)


def forget_uploads(files: Sequence[UploadedFile]) -> None:
    """Drop stored uploads from the session's memory: Streamlit keeps every uploaded file until
    the session ends, though the page hands out a fresh uploader once a run holds them."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    # The in-memory manager Streamlit's server uses has remove_file; its base interface does not.
    remove = getattr(ctx.uploaded_file_mgr, "remove_file", None) if ctx is not None else None
    if ctx is None or remove is None:
        return
    for f in files:
        remove(ctx.session_id, f.file_id)
    release_freed_memory()


def thumbnails(items: Iterable[tuple[bytes | None, str]]) -> None:
    """Thumbnails with captions, flowing left to right."""
    with st.container(horizontal=True, gap="small"):
        for thumb, caption in items:
            if thumb is None:
                st.caption(f"🖼️ {caption} (no preview)", width=THUMB_PX)
            else:
                st.image(thumb, caption=caption, width=THUMB_PX - 32)


def upload_thumbnails(files: Sequence[UploadedFile], limit: int = 48) -> None:
    """Thumbnails of uploaded files with their names and sizes."""
    thumbnails(
        (
            _upload_thumbnail(f.file_id, f.getvalue()),
            f"{f.name} · {fmt_bytes(f.size)}"
            + rotation_badge(_upload_rotation(f.file_id, f.getvalue())),
        )
        for f in files[:limit]
    )
    if len(files) > limit:
        st.caption(f"… and {len(files) - limit} more.")


def run_thumbnails(service: StudioService, run_id: str, limit: int = 48) -> None:
    """Thumbnails of a run's stored images, in model order."""
    try:
        paths = service.image_paths(run_id)
    except StorageError as exc:
        st.warning(md_escape(f"The images cannot be listed: {exc}"))
        return
    if not paths:
        st.caption("No images are stored for this run.")
        return
    items = []
    for path in paths[:limit]:
        try:
            info = path.stat()
        except OSError:
            continue
        thumb = _file_thumbnail(str(path), info.st_mtime_ns, info.st_size)
        badge = rotation_badge(_file_rotation(str(path), info.st_mtime_ns, info.st_size))
        items.append((thumb, f"{path.name} · {fmt_bytes(info.st_size)}{badge}"))
    thumbnails(items)
    if len(paths) > limit:
        st.caption(f"… and {len(paths) - limit} more.")


# --- video ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoReview:
    """What sampling an uploaded clip would give, or why it is refused."""

    frames: int | None = None
    duration_s: float | None = None
    clip_fps: float | None = None
    refused: str | None = None


@st.cache_data(max_entries=50, show_spinner=False)
def _probe_upload(
    file_id: str, name: str, fps: float, _data: bytes, _service: StudioService
) -> VideoReview:
    try:
        probe = probe_video(name, _data, _service.video_limits, fps)
    except VideoRejected as exc:
        return VideoReview(refused=exc.problems[0].reason)
    return VideoReview(probe.expected_frames(fps), probe.duration_s, probe.clip_fps)


def review_video(file: UploadedFile, fps: float, service: StudioService) -> VideoReview:
    """The sampled frame count of an uploaded clip at `fps` (read from its container, not
    decoded), or the reason it would be refused."""
    return _probe_upload(file.file_id, file.name, fps, file.getvalue(), service)
