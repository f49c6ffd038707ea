"""What every export shares: the cameras of a GLB (or predictions) lined up with its images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..cameras import MODEL_WIDTH, CameraSet, Mode, cameras_from_glb, cameras_from_predictions
from ..errors import ExportError
from ..upload_prep import MAX_HEIGHT, resized_size

PathLike = str | os.PathLike[str]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Photo:
    """One input photo and how VGGT's crop mode turned it into model pixels."""

    name: str
    path: Path | None
    width: int  # the original's size (the model size when there is no original)
    height: int
    scale_x: float  # model pixels per original pixel
    scale_y: float
    crop_top: int  # rows of the resized image above the model's first row (< 0: white padding)
    model_height: int  # rows of the model's input (all frames share it)


def model_to_original(k: NDArray[np.float64], photo: Photo) -> NDArray[np.float64]:
    """Intrinsics in model pixels (centres at integers) as intrinsics of the original photo
    (centres at integers), undoing VGGT's resize to width 518 and its centre crop."""
    out = np.eye(3)
    out[0, 0] = k[0, 0] / photo.scale_x
    out[1, 1] = k[1, 1] / photo.scale_y
    out[0, 2] = (k[0, 2] + 0.5) / photo.scale_x - 0.5
    out[1, 2] = (k[1, 2] + 0.5 + photo.crop_top) / photo.scale_y - 0.5
    return out


def photos(images_dir: PathLike | None, count: int, heights: list[int]) -> list[Photo]:
    """The run's photos in the Space's order (sorted by name), or stand-in names without them."""
    if images_dir is None:
        return [
            Photo(f"frame_{i:04d}.png", None, MODEL_WIDTH, h, 1.0, 1.0, 0, h)
            for i, h in enumerate(heights)
        ]
    folder = Path(images_dir)
    if not folder.is_dir():
        raise ExportError(f"the images folder {folder} does not exist")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if len(files) != count:
        raise ExportError(
            f"the GLB has {count} cameras but {folder} holds {len(files)} images; give the "
            "folder of exactly the images the GLB was made from"
        )
    if not files:
        raise ExportError(f"{folder} holds no images")
    sizes = []
    for path in files:
        try:
            with Image.open(path) as img:
                sizes.append(img.size)
        except (OSError, ValueError) as exc:
            raise ExportError(f"{path.name} is not a readable image ({exc})") from None
    resized = [resized_size(w, h) for w, h in sizes]
    # VGGT pads frames shorter than the tallest with white, centred (mixed shapes).
    model_height = max(min(h, MAX_HEIGHT) for _, h in resized)
    out = []
    for path, (width, height), (new_width, new_height) in zip(files, sizes, resized, strict=True):
        crop = (new_height - MAX_HEIGHT) // 2 if new_height > MAX_HEIGHT else 0
        crop -= (model_height - min(new_height, MAX_HEIGHT)) // 2
        scale_x, scale_y = new_width / width, new_height / height
        out.append(Photo(path.name, path, width, height, scale_x, scale_y, crop, model_height))
    return out


def model_image(photo: Photo) -> Image.Image:
    """The photo as VGGT saw it: width 518, bicubic, centre-cropped to at most 518 rows."""
    assert photo.path is not None
    with Image.open(photo.path) as opened:
        img = opened.copy()
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    new_width, new_height = resized_size(*img.size)
    img = img.resize((new_width, new_height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (new_width, photo.model_height), (255, 255, 255))
    canvas.paste(img, (0, -photo.crop_top))  # crops the centre, or pads it with white
    return canvas


def load_cameras(
    glb: PathLike,
    *,
    predictions: PathLike | None = None,
    images_dir: PathLike | None = None,
    mode: Mode | None = None,
) -> tuple[CameraSet, list[Photo]]:
    """The cameras (from predictions.npz when given, else the GLB) and the photos they name."""
    heights = None
    if images_dir is not None:  # checked before the cameras' work; their count is checked after
        folder = Path(images_dir)
        count = len(_image_files(folder)) if folder.is_dir() else 0
        heights = [p.model_height for p in photos(folder, count, [])]
    if predictions is not None:
        cameras = cameras_from_predictions(predictions, glb, mode=mode or "depth")
    else:
        cameras = cameras_from_glb(glb, mode=mode, heights=heights)
    found = photos(images_dir, len(cameras.cameras), [c.height for c in cameras.cameras])
    return cameras, found


def _image_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def write_model_images(photos: list[Photo], folder: Path) -> None:
    """Save each photo as VGGT saw it under its own name in `folder` (never over the originals)."""
    if any(p.path is not None and p.path.parent.resolve() == folder.resolve() for p in photos):
        raise ExportError(f"{folder} holds the original photos; export to another folder")
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        model_image(photo).save(folder / photo.name, quality=95)
