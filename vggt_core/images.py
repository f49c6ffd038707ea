"""Checking uploaded images: a real, decodable, bounded image, and a safe file name for it."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Iterable

from PIL import Image, UnidentifiedImageError

from .errors import ImageRejected

__all__ = [
    "FORMAT_EXTENSIONS",
    "ImageRejected",
    "check_image",
    "exif_rotation",
    "is_plain_name",
    "safe_image_name",
    "unique_names",
    "upload_limit_mb",
]

FORMAT_EXTENSIONS: dict[str, str] = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
_STEM_CHARS = re.compile(r"[^\w\-+()]+")
# Up to this height:width, VGGT's resize to width 518 makes at most 518×33,152 pixels (~70 MB).
MAX_TALL_RATIO = 64
_MAX_STEM_CHARS = 80
_MAX_STEM_BYTES = 180  # leaves room for a uniqueness suffix and the extension under 255 bytes


MB = 2**20  # what Streamlit's uploader calls a MB: its limit and ours read alike


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def upload_limit_mb(max_bytes: int) -> int:
    """The per-file limit in the uploader's own MB (never below our exact byte limit)."""
    return max(1, -(-max_bytes // MB))


def _limit(n: int) -> str:
    shown = n / MB
    return f"{shown:g} MB" if shown == int(shown) else f"{shown:.1f} MB"


_BOMB = re.compile(r"\((\d+) pixels\) exceeds limit")

# Files check_image already decoded whole, by digest and limits: the New run page checks each
# upload when it arrives and the store checks it again on Reconstruct, which is then a lookup
# (a SHA-256 of 4 MB takes ~2 ms, a 12 MP decode ~100 ms and ~36 MB).
_VERIFIED: OrderedDict[tuple[bytes, int, int], str] = OrderedDict()
_VERIFIED_MAX = 1024
_VERIFIED_LOCK = threading.Lock()


def _verified_key(data: bytes, max_bytes: int, max_pixels: int) -> tuple[bytes, int, int]:
    return hashlib.sha256(data).digest(), max_bytes, max_pixels


def check_image(name: str, data: bytes, *, max_bytes: int, max_pixels: int) -> str:
    """Check that `data` is one decodable image within the limits; return its real extension."""
    if not data:
        raise ImageRejected(name, "the file is empty")
    if len(data) > max_bytes:
        raise ImageRejected(name, f"it is {_mb(len(data))}, over the limit of {_limit(max_bytes)}")
    key = _verified_key(data, max_bytes, max_pixels)
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(key)
        if known is not None:
            _VERIFIED.move_to_end(key)
            return known
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own 89 MP; `max_pixels` below is the limit that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = image.format or "unknown"
                if kind not in FORMAT_EXTENSIONS:
                    raise ImageRejected(
                        name, f"{kind} images are not supported (use JPEG, PNG, WebP, BMP or TIFF)"
                    )
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        name,
                        f"it is {width}×{height} pixels, over the limit of "
                        f"{max_pixels / 1e6:g} megapixels",
                    )
                if height * 518 / width / 14 < 0.5:
                    raise ImageRejected(name, f"it is {width}×{height}: too wide for the model")
                # VGGT resizes to width 518 before its centre crop: a thin strip of a few KB
                # would become gigabytes of pixels here (presize) and on the Space, of which
                # the crop keeps under 2 %.
                if height > MAX_TALL_RATIO * width:
                    raise ImageRejected(
                        name,
                        f"it is {width}×{height}: too tall for the model (more than "
                        f"{MAX_TALL_RATIO} times as tall as wide)",
                    )
                if kind == "JPEG":
                    # Decoded at an eighth of the size: every byte of the file is still read
                    # and entropy-decoded (a truncated one still fails), in 1/64 the memory.
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()  # decodes every byte: a truncated file fails here, not on the Space
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        found = _BOMB.search(str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "far more pixels"
        raise ImageRejected(
            name, f"it is {size}, over the limit of {max_pixels / 1e6:g} megapixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(name, "it is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageRejected(name, f"the image is damaged or truncated ({exc})") from None
    extension = FORMAT_EXTENSIONS[kind]
    with _VERIFIED_LOCK:
        _VERIFIED[key] = extension
        while len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)
    return extension


def safe_image_name(raw: str, extension: str) -> str:
    """The base name of `raw` with only safe characters, bounded, ending in `extension`."""
    base = re.split(r"[\\/]", raw)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if ch.isprintable())
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _STEM_CHARS.sub("_", stem).strip("_-") or "image"
    stem = stem[:_MAX_STEM_CHARS]
    while len(stem.encode()) > _MAX_STEM_BYTES:
        stem = stem[:-1]
    return stem + extension


def is_plain_name(name: str) -> bool:
    """True for one printable, non-hidden path component of at most 255 bytes.

    Every name `safe_image_name` and `unique_names` make is one, and so are the names an
    earlier system stored (spaces, several dots); `..`, separators and control characters never.
    """
    return (
        bool(name)
        and name.isprintable()
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and len(name.encode()) <= 255
    )


def unique_names(wanted: Iterable[str], taken: Iterable[str]) -> list[str]:
    """Make each wanted name unique (case-insensitively) against `taken` and each other."""
    seen = {name.lower() for name in taken}
    result = []
    for name in wanted:
        stem, dot, ext = name.rpartition(".")
        candidate, k = name, 2
        while candidate.lower() in seen:
            candidate = f"{stem}_{k}{dot}{ext}"
            k += 1
        seen.add(candidate.lower())
        result.append(candidate)
    return result


# EXIF Orientation values (1 is upright) and what a viewer does to show the photo upright.
_ORIENTATION_TAG = 0x0112
ORIENTATIONS: dict[int, str] = {
    2: "mirrored",
    3: "upside down",
    4: "upside down, mirrored",
    5: "sideways, mirrored",
    6: "sideways",
    7: "sideways, mirrored",
    8: "sideways",
}


def exif_rotation(data: bytes) -> str | None:
    """How the stored pixels differ from the upright photo its EXIF asks viewers to show
    ("sideways", "upside down"…), or None when upright or unknown; VGGT sees the stored pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(_ORIENTATION_TAG)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return ORIENTATIONS.get(value) if isinstance(value, int) else None
