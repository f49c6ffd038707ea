"""Benchmark: bytes sent for phone photos with the model-sized presize step on and off."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from bench.common import Figure
from vggt_core.local_space import StandInOptions, spawn_local_space
from vggt_core.space import VGGTSpace
from vggt_core.upload_prep import prepare_upload

PHONE_SIZE = (4032, 3024)
TARGET_RATIO = 0.15
UPLINK_MBIT = 20.0  # a home or conference uplink, to put the loopback figure in context


def photographic_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    """Write a JPEG (quality 92) that compresses like a phone photo: smooth noise plus grain."""
    rng = np.random.default_rng(seed)
    # The smooth part is built at half size and upsampled: it is the slow part otherwise.
    hw, hh = (width + 1) // 2, (height + 1) // 2
    yy = np.linspace(0, 1, hh, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, hw, dtype=np.float32)[None, :]
    tint = rng.uniform(0.7, 1.2, 3).astype(np.float32)
    acc = (60 + 110 * yy + 40 * xx)[..., None] * tint
    for cells, amp in ((3, 70), (12, 40), (48, 25), (200, 16), (700, 10)):
        gw, gh = cells, max(2, cells * height // width)
        small = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8))
        up = small.resize((hw, hh), Image.Resampling.BICUBIC)
        acc = acc + (np.asarray(up, dtype=np.float32) - 128) * (amp / 128)
    smooth = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    smooth = smooth.resize((width, height), Image.Resampling.BICUBIC)
    grain = 12  # sensor noise: what makes a 12-megapixel JPEG weigh 3-5 MB
    noise = Image.fromarray(rng.integers(0, 2 * grain + 1, (height, width, 3), dtype=np.uint8))
    ImageChops.add(smooth, noise, scale=1.0, offset=-grain).save(path, "JPEG", quality=92)


def upload_seconds(paths: list[Path]) -> float:
    """Wall time of the product's upload step (`/update_gallery_on_upload`) to a fresh stand-in."""
    with spawn_local_space(StandInOptions()) as server, VGGTSpace(server.url).session() as session:
        start = time.perf_counter()
        session.upload(paths)
        return time.perf_counter() - start


def run(quick: bool) -> list[Figure]:
    """Stage generated phone photos with presize on and off; report the byte ratio and time."""
    count = 3 if quick else 10
    workdir = Path(tempfile.mkdtemp(prefix="vggt-bench-upload-"))
    try:
        originals = workdir / "originals"
        originals.mkdir()
        paths = []
        for i in range(count):
            path = originals / f"IMG_{i:04d}.jpg"
            photographic_jpeg(path, *PHONE_SIZE, seed=i)
            paths.append(path)
        off = prepare_upload(paths, workdir / "off", presize=False)
        start = time.perf_counter()
        on = prepare_upload(paths, workdir / "on", presize=True)
        elapsed = time.perf_counter() - start
        upload_off, upload_on = upload_seconds(off.paths), upload_seconds(on.paths)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = on.bytes_sent / off.bytes_sent
    size = f"{count} JPEGs {PHONE_SIZE[0]}×{PHONE_SIZE[1]} q92"
    return [
        Figure(
            "presize_bytes_ratio",
            f"{ratio:.3f} ({on.bytes_sent / 1e6:.1f} MB sent instead of "
            f"{off.bytes_sent / 1e6:.1f} MB, {size})",
            f"≤ {TARGET_RATIO}",
            ratio <= TARGET_RATIO,
        ),
        Figure(
            "presize_upload_phase_s (info; loopback to the stand-in)",
            f"on {elapsed + upload_on:.2f} s (prepare {elapsed:.2f} + send {upload_on:.2f}), "
            f"off {upload_off:.2f} s; at {UPLINK_MBIT:g} Mbit/s the sending alone would take "
            f"{on.bytes_sent * 8 / UPLINK_MBIT / 1e6:.1f} s on, "
            f"{off.bytes_sent * 8 / UPLINK_MBIT / 1e6:.1f} s off",
            "",
            None,
        ),
        Figure(
            "presize_seconds_per_image",
            f"{elapsed / count:.3f} s (decode, resize, lossless PNG; {sum(on.resized)} resized)",
            "",
            None,
        ),
    ]


if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv):
        print(figure.line())
