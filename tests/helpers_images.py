"""Real image bytes for the tests: textured photos in every accepted format, and hostile PNGs."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def textured(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """An RGB image with gradients and noise, so encoders produce realistic, non-trivial data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x * y) % 256], axis=-1
    )
    noise = rng.integers(0, 48, size=(height, width, 3))
    return Image.fromarray(((base + noise) % 256).astype(np.uint8), "RGB")


def image_bytes(fmt: str = "JPEG", width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """The encoded bytes of a textured image in `fmt` (a Pillow format name)."""
    buffer = io.BytesIO()
    textured(width, height, seed).save(buffer, format=fmt)
    return buffer.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return image_bytes("JPEG", width, height, seed)


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return image_bytes("PNG", width, height, seed)


def gif_bytes() -> bytes:
    """A real, decodable GIF: an image format the store does not accept."""
    buffer = io.BytesIO()
    textured(32, 24).convert("P").save(buffer, format="GIF")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int, idat: bytes = b"") -> bytes:
    """A tiny PNG whose valid header claims `width`×`height` RGB pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(idat))
        + png_chunk(b"IEND", b"")
    )


def zeros_png(width: int, height: int) -> bytes:
    """A real, decodable all-black PNG: many pixels in very few bytes."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


LOCK_FILES = frozenset({".lock", ".worker"})


def run_files(folder: Path) -> list[str]:
    """A run folder's entries, sorted, without its lock files (which live and go with the run)."""
    return sorted(name for name in os.listdir(folder) if name not in LOCK_FILES)


def bilevel_stripes_png(width: int, height: int, period: int) -> bytes:
    """A 1-bit PNG of vertical stripes `period` pixels wide (black first), encoded row by row:
    a 100-megapixel one takes tens of KB on disk and no more memory than that to make."""
    bits = np.array([(x // period) % 2 for x in range(width)], dtype=np.uint8)
    row = b"\x00" + np.packbits(bits).tobytes()  # filter type 0, then the packed pixels
    squeeze = zlib.compressobj(9)
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
