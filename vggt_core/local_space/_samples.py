"""Deterministic sample images for tests, benchmarks and demos."""

from pathlib import Path

import numpy as np
from PIL import Image


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
