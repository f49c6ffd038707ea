"""Stage images for upload: each one shrunk to exactly the pixels VGGT will use, or sent as is."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# VGGT's `load_and_preprocess_images(mode="crop")`: width 518, height a multiple of 14,
# centre-cropped to 518 when taller.
MODEL_WIDTH = 518
PATCH = 14
MAX_HEIGHT = 518
PARALLEL_IMAGES = 2
# One limit for the whole process: eight runs preparing at once still decode PARALLEL_IMAGES
# photos at a time (a 12 MP photo is about 36 MB decoded), not two each.
_slots = threading.BoundedSemaphore(PARALLEL_IMAGES)
# Rows converted at a time: a strip of about a megapixel costs a few MB in any mode.
STRIP_PIXELS = 1 << 20


@dataclass(frozen=True)
class StagedFile:
    """One image as staged for upload, in the order it was given."""

    source: Path
    path: Path
    resized: bool
    bytes_original: int
    bytes_sent: int


@dataclass(frozen=True)
class PreparedUpload:
    """The files to send, in frame order, and what the preparation saved."""

    files: tuple[StagedFile, ...]
    originals_reason: str | None = None

    @property
    def paths(self) -> list[Path]:
        """The staged paths, in frame order."""
        return [f.path for f in self.files]

    @property
    def resized(self) -> list[bool]:
        """Per file: whether the model-sized PNG is sent instead of the original."""
        return [f.resized for f in self.files]

    @property
    def bytes_sent(self) -> int:
        """Total bytes of the staged files."""
        return sum(f.bytes_sent for f in self.files)

    @property
    def bytes_original(self) -> int:
        """Total bytes of the stored originals."""
        return sum(f.bytes_original for f in self.files)


def resized_size(width: int, height: int) -> tuple[int, int]:
    """The size VGGT resizes a `width`×`height` image to, before its centre crop."""
    # Same float expression as VGGT, so rounding (banker's, on the same double) agrees.
    new_height = round(height * (MODEL_WIDTH / width) / PATCH) * PATCH
    return MODEL_WIDTH, new_height


def model_input_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) of the pixels VGGT finally sees, after its centre crop."""
    new_width, new_height = resized_size(width, height)
    return new_width, min(new_height, MAX_HEIGHT)


def staged_name(index: int, count: int, source: Path, ext: str | None = None) -> str:
    """`0007_<stem><ext>`: unique, and the Space's sort by name keeps the given order."""
    digits = max(4, len(str(max(count - 1, 0))))
    return f"{index:0{digits}d}_{source.stem}{source.suffix if ext is None else ext}"


def model_pixels(img: Image.Image, *, strip_pixels: int = STRIP_PIXELS) -> Image.Image | None:
    """VGGT's composite, convert, bicubic resize and crop applied to `img`; None if it cannot.

    An image that needs converting is converted and resized across a strip of rows at a time
    (about `strip_pixels` pixels each), so staging costs about its decoded size, not that plus
    a whole-image RGB copy (a 1-bit image is held in a byte a pixel, its RGB copy in four).
    """
    width, height = img.size
    size = resized_size(width, height)
    if size[1] <= 0:
        return None  # VGGT itself fails on such a strip; let it see the original.
    if img.mode != "RGB":
        # convert("RGB") of an RGB image is a plain copy: skipping it changes nothing.
        img = _resize_rows(img, size[0], max(1, strip_pixels // width))
    img = img.resize(size, Image.Resampling.BICUBIC)
    if size[1] > MAX_HEIGHT:
        top = (size[1] - MAX_HEIGHT) // 2
        img = img.crop((0, top, MODEL_WIDTH, top + MAX_HEIGHT))
    return img


def _resize_rows(img: Image.Image, new_width: int, rows: int) -> Image.Image:
    """VGGT's per-pixel steps (composite on white, convert to RGB) and the horizontal pass of its
    bicubic resize, `rows` rows at a time: an RGB image `new_width` wide, as tall as `img`.

    Exact: both steps are per pixel or per row, and Pillow's resize makes its horizontal pass
    into an 8-bit image first too, so the vertical pass that follows sees the same values.
    """
    width, height = img.size
    out = Image.new("RGB", (new_width, height))
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        strip = img.crop((0, top, width, bottom))
        if strip.mode == "RGBA":
            background = Image.new("RGBA", strip.size, (255, 255, 255, 255))
            strip = Image.alpha_composite(background, strip)
        strip = strip.convert("RGB")
        out.paste(strip.resize((new_width, bottom - top), Image.Resampling.BICUBIC), (0, top))
    return out


def _compact(img: Image.Image) -> Image.Image:
    """Greyscale when all channels agree: VGGT's convert("RGB") restores the same pixels."""
    arr = np.asarray(img)
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]), mode="L")
    return img


def _write_presized(source: Path, target: Path) -> bool:
    """Write the model-sized PNG of `source` to `target` when it has more pixels than that."""
    try:
        with Image.open(source) as img:
            width, height = img.size
            out_w, out_h = model_input_size(width, height)
            if out_h <= 0 or width * height <= out_w * out_h:
                return False  # already at or below the model size: send it as it is
            out = model_pixels(img)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False  # Pillow cannot read it here; the Space will see the original
    if out is None:
        return False
    _compact(out).save(target, format="PNG", optimize=True)
    return True


def _link_or_copy(source: Path, target: Path) -> None:
    """Put the original bytes at `target`: a hard link when possible, else a copy."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        shutil.copyfile(source, target)


def _unlink(path: Path) -> None:
    """Remove `path` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def set_parallel_images(count: int) -> None:
    """How many photos the whole process prepares at once, shared by every run (config)."""
    global _slots
    if count < 1:
        raise ValueError(f"at least one image must be prepared at a time (got {count})")
    _slots = threading.BoundedSemaphore(count)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()
_M_MMAP_THRESHOLD = -3
if _LIBC is not None:
    # Buffers of 1 MB and more (decoded photos, resize strips, point arrays) always get their
    # own mapping, returned to the system when freed: glibc's default raises this threshold
    # after each large free, after which such buffers stay in its heaps.
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def release_freed_memory() -> None:
    """Hand the memory freed by decoding back to the system (glibc; elsewhere nothing).

    A decoded 12 MP photo is ~36 MB: after the first few, glibc serves the next ones from its
    heaps (its mmap threshold grows) and keeps what they free, so the process's RSS only grows.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _stage(index: int, count: int, source: Path, dest_dir: Path, presize: bool) -> StagedFile:
    """Stage one image in one of the process's shared slots."""
    with _slots:
        try:
            return _stage_now(index, count, source, dest_dir, presize)
        finally:
            release_freed_memory()


def _stage_now(index: int, count: int, source: Path, dest_dir: Path, presize: bool) -> StagedFile:
    """Stage one image: its model-sized PNG when that is smaller, else the original bytes."""
    original_size = source.stat().st_size
    as_is = dest_dir / staged_name(index, count, source)
    if presize:
        png = dest_dir / staged_name(index, count, source, ".png")
        tmp = png.with_name(png.name + ".tmp")
        try:
            written = _write_presized(source, tmp)
        except BaseException:
            _unlink(tmp)
            raise
        if written:
            png_size = tmp.stat().st_size
            if png_size < original_size:
                _unlink(as_is)
                tmp.replace(png)
                return StagedFile(source, png, True, original_size, png_size)
        _unlink(tmp)
    _unlink(as_is)
    _link_or_copy(source, as_is)
    return StagedFile(source, as_is, False, original_size, original_size)


MASK_SKY_REASON = (
    "Mask sky was on: the Space computes the sky mask from the uploaded files themselves, "
    "so the original photos were sent."
)
OTHER_MODEL_REASON = (
    "The backend is not the VGGT-1B demo (its /gradio_demo lacks prediction_mode and "
    "frame_filter), so images sized for VGGT-1B would be wrong for it: the originals were sent."
)


def originals_reason(presize: bool, mask_sky: bool, vggt_1b: bool) -> str | None:
    """Why presize, though asked, must not apply (None when it may, or when it was not asked)."""
    if not presize:
        return None
    if mask_sky:
        return MASK_SKY_REASON
    if not vggt_1b:
        return OTHER_MODEL_REASON
    return None


def prepare_upload(
    image_paths: Sequence[Path],
    dest_dir: Path,
    presize: bool = True,
    *,
    originals_because: str | None = None,
) -> PreparedUpload:
    """Stage each image into `dest_dir`: its model-sized PNG when smaller, else its original.

    With `originals_because` (see `originals_reason`) every original is sent as it is.
    """
    presize = presize and originals_because is None
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    sources = [Path(p) for p in image_paths]
    if any(s.resolve().parent == dest_dir.resolve() for s in sources):
        # Staged names could then replace an original: never stage next to the stored images.
        raise ValueError(f"dest_dir {dest_dir} must not be the folder of the images it stages")
    count = len(sources)
    # Pillow decodes, resizes and encodes without the GIL: two images at a time use both cores
    # of a small machine while holding at most two decoded photos in memory.
    with ThreadPoolExecutor(max_workers=PARALLEL_IMAGES) as pool:
        jobs = [
            pool.submit(_stage, index, count, source, dest_dir, presize)
            for index, source in enumerate(sources)
        ]
        staged = [job.result() for job in jobs]
    return PreparedUpload(tuple(staged), originals_because)
