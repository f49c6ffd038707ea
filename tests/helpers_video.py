"""Phone-style rotated clips for the tests: frames stored sideways, a `tkhd` matrix to turn them.

A phone held upright records landscape frames and writes, in the track header's transformation
matrix, the turn a player must apply to show them as the phone did.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import av
import numpy as np
from PIL import Image

# The matrix {a b u, c d v, x y w}: a b c d x y in 16.16 fixed point, u v w in 2.30.
_ONE_16_16 = 1 << 16
_ONE_2_30 = 1 << 30
# How a stored frame is turned counter-clockwise to undo a clockwise display turn.
_UNDO = {
    0: None,
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}
BLOCK = 12  # side of the bright block in the upright picture's top-left corner


def upright_picture(width: int, height: int) -> Image.Image:
    """What the phone shows: dark grey with a white block in its top-left corner."""
    pixels = np.full((height, width, 3), 40, np.uint8)
    pixels[:BLOCK, :BLOCK] = 255
    return Image.fromarray(pixels, "RGB")


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The ISO-BMFF boxes between `start` and `end`: type, payload start, box end."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    found = [(s, e) for k, s, e in _boxes(data, start, end) if k == kind]
    assert len(found) == 1, f"expected one {kind!r} box, found {len(found)}"
    return found[0]


def tkhd_matrix_offset(data: bytes) -> int:
    """Where the (only) track's `moov/trak/tkhd` transformation matrix starts in `data`."""
    moov = _child(data, 0, len(data), b"moov")
    trak = _child(data, *moov, b"trak")
    start, _ = _child(data, *trak, b"tkhd")
    version = data[start]
    # version+flags, then creation, modification, track id, reserved, duration (v1: 64-bit
    # times and duration), then reserved[2], layer, alternate group, volume, reserved.
    times = 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4
    return start + 4 + times + 8 + 2 + 2 + 2 + 2


def tkhd_matrix(data: bytes) -> tuple[int, ...]:
    """The nine raw integers of the track header's matrix."""
    offset = tkhd_matrix_offset(data)
    return struct.unpack(">9i", data[offset : offset + 36])


def with_matrix(data: bytes, matrix: tuple[int, ...]) -> bytes:
    """`data` with the nine raw integers `matrix` as its track header's matrix."""
    offset = tkhd_matrix_offset(data)
    return data[:offset] + struct.pack(">9i", *matrix) + data[offset + 36 :]


def with_display_turn(
    data: bytes, clockwise: int, size: tuple[int, int], mirrored: bool = False
) -> bytes:
    """`data` with its track header saying: mirror the stored frames left-right if `mirrored`,
    then turn them `clockwise` degrees, to show them.

    Written as phones write it, with the translation that keeps the picture in place; `size`
    is the stored frames' (width, height).
    """
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[clockwise]
    # x' = a·x + c·y + tx, y' = b·x + d·y + ty, with y pointing down the picture: (a, b) is
    # where the x axis goes, (c, d) where the y axis goes; a mirror first sends x to -x.
    flip = -1 if mirrored else 1
    a, b, c, d = flip * cos, flip * sin, -sin, cos
    width, height = size
    corners = [(0, 0), (width, 0), (0, height), (width, height)]
    tx = -min(a * x + c * y for x, y in corners)
    ty = -min(b * x + d * y for x, y in corners)
    a, b, c, d, tx, ty = (v * _ONE_16_16 for v in (a, b, c, d, tx, ty))
    return with_matrix(data, (a, b, 0, c, d, 0, tx, ty, _ONE_2_30))


def phone_clip(
    clockwise: int,
    upright: tuple[int, int] = (48, 64),
    seconds: float = 2,
    fps: int = 10,
    *,
    mirrored: bool = False,
) -> bytes:
    """An H.264 mp4 of `upright_picture(*upright)` stored as a phone would for this turn (and
    mirror), with the track header's matrix that shows it upright again."""
    picture = upright_picture(*upright)
    undo = _UNDO[clockwise]
    stored = picture if undo is None else picture.transpose(undo)
    if mirrored:
        stored = stored.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(stored)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = stored.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0"}
        for _ in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = out.getvalue()
    if clockwise == 0 and not mirrored:
        return data
    return with_display_turn(data, clockwise, stored.size, mirrored)
