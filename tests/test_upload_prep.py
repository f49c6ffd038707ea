"""Upload preparation: the staged files give VGGT exactly the input the originals would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers_images import bilevel_stripes_png
from PIL import Image, ImageChops

from vggt_core.upload_prep import (
    PARALLEL_IMAGES,
    model_input_size,
    model_pixels,
    prepare_upload,
    resized_size,
    set_parallel_images,
)

# --------------------------------------------------------------------------------------------
# Test images with photographic texture: smooth noise at several scales, a gradient, grain.


def photo(width: int, height: int, seed: int, grain: int = 12) -> Image.Image:
    """An RGB image that compresses like a photograph (not flat colour)."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    tint = rng.uniform(0.7, 1.2, 3).astype(np.float32)
    acc = (60 + 110 * yy + 40 * xx)[..., None] * tint
    for cells, amp in ((3, 70), (12, 40), (48, 25), (200, 16)):
        gw, gh = cells, max(2, cells * height // width)
        small = Image.fromarray(rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8))
        up = small.resize((width, height), Image.Resampling.BICUBIC)
        acc = acc + (np.asarray(up, dtype=np.float32) - 128) * (amp / 128)
    smooth = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    noise = Image.fromarray(rng.integers(0, 2 * grain + 1, (height, width, 3), dtype=np.uint8))
    return ImageChops.add(smooth, noise, scale=1.0, offset=-grain)


def _jpeg(path: Path, img: Image.Image, **kwargs: object) -> Path:
    img.save(path, "JPEG", quality=92, **kwargs)
    return path


def make_landscape(d: Path) -> Path:
    return _jpeg(d / "landscape.jpg", photo(1600, 1200, 1))


def make_portrait(d: Path) -> Path:
    # 518 wide makes it 777 -> 770 tall: VGGT crops the centre 518 rows.
    return _jpeg(d / "portrait.jpg", photo(1200, 1800, 2))


def make_square(d: Path) -> Path:
    return _jpeg(d / "square.jpg", photo(1800, 1800, 3))


def make_panorama(d: Path) -> Path:
    return _jpeg(d / "panorama.jpg", photo(2000, 400, 4))


def make_tiny(d: Path) -> Path:
    return _jpeg(d / "tiny.jpg", photo(400, 300, 5))


def make_rgba(d: Path) -> Path:
    rgb = np.asarray(photo(900, 700, 6))
    yy, xx = np.mgrid[0:700, 0:900]
    alpha = np.clip(255 - np.hypot(yy - 350, xx - 450) / 2.2, 0, 255).astype(np.uint8)
    alpha[:40] = 0  # fully transparent rows take the other branch of the composite
    path = d / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


def make_grey(d: Path) -> Path:
    return _jpeg(d / "grey.jpg", photo(1100, 800, 7).convert("L"))


def make_palette(d: Path) -> Path:
    path = d / "palette.png"
    photo(800, 600, 8).quantize(colors=200).save(path)
    return path


def make_exif_rotated(d: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display": VGGT does not apply it
    return _jpeg(d / "rotated.jpg", photo(1400, 1050, 9), exif=exif.tobytes())


def make_bilevel(d: Path) -> Path:
    path = d / "bilevel.png"
    photo(1000, 1400, 16).convert("1").save(path)  # dithered: every pixel 0 or 255
    return path


def make_grey_alpha(d: Path) -> Path:
    grey = np.asarray(photo(760, 600, 17).convert("L"))
    alpha = np.tile(np.linspace(0, 255, 760, dtype=np.uint8), (600, 1))
    path = d / "grey_alpha.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    return path


def make_grey16(d: Path) -> Path:
    rng = np.random.default_rng(10)
    grey = np.asarray(photo(900, 600, 10).convert("L"), dtype=np.uint16)
    # Pillow clips 16-bit greyscale to 255 on convert("RGB"); keep most values below that.
    values = (grey + rng.integers(0, 60, grey.shape)).astype(np.uint16)
    path = d / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    return path


CASES: dict[str, Callable[[Path], Path]] = {
    "landscape": make_landscape,
    "portrait": make_portrait,
    "square": make_square,
    "panorama": make_panorama,
    "tiny": make_tiny,
    "rgba": make_rgba,
    "grey": make_grey,
    "palette": make_palette,
    "exif_rotated": make_exif_rotated,
    "grey16": make_grey16,
    "bilevel": make_bilevel,
    "grey_alpha": make_grey_alpha,
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("originals")
    return {name: make(d) for name, make in CASES.items()}


@pytest.fixture(scope="module")
def staged(originals: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    names = list(originals)
    before = {n: sha(p) for n, p in originals.items()}
    prepared = prepare_upload([originals[n] for n in names], tmp_path_factory.mktemp("staged"))
    assert {n: sha(p) for n, p in originals.items()} == before, "an original changed"
    return dict(zip(names, prepared.files, strict=True)), prepared


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# The reference: VGGT's load_and_preprocess_images(mode="crop") for one image, written again
# here with numpy. Only decoding is left to Pillow (VGGT decodes with Pillow too); compositing,
# the RGB conversion and the bicubic resize are ports of Pillow's C code, so this shares no
# code with vggt_core.upload_prep.

PRECISION_BITS = 32 - 8 - 2  # Resample.c


def _bicubic(x: float) -> float:
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's precompute_coeffs and normalize_coeffs_8bpc: source indices, fixed-point weights."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    index = np.zeros((out_size, ksize), np.intp)
    weight = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ws = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for w in ws:
            total += w
        for x, w in enumerate(ws):
            k = w / total if total != 0.0 else w
            fixed = -0.5 + k * (1 << PRECISION_BITS) if k < 0 else 0.5 + k * (1 << PRECISION_BITS)
            weight[xx, x] = int(fixed)
            index[xx, x] = xmin + x
    return index, weight


def _resample_axis(arr: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    index, weight = _coefficients(arr.shape[axis], out_size)
    src = arr.astype(np.int64)
    shape = list(arr.shape)
    shape[axis] = out_size
    acc = np.full(shape, 1 << (PRECISION_BITS - 1), np.int64)
    for t in range(index.shape[1]):
        if axis == 1:
            acc += src[:, index[:, t], :] * weight[None, :, t, None]
        else:
            acc += src[index[:, t], :, :] * weight[:, t, None, None]
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def np_resize_bicubic(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's two-pass 8-bit bicubic resize (horizontal first); a copy at the same size."""
    out = rgb
    if width != rgb.shape[1]:
        out = _resample_axis(out, width, axis=1)
    if height != rgb.shape[0]:
        out = _resample_axis(out, height, axis=0)
    return out.copy()


def np_composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Pillow's ImagingAlphaComposite of `rgba` over opaque white, alpha dropped."""
    a = rgba[..., 3:4].astype(np.uint32)
    coef1 = a * 255 * 255 * 128 // (a * 255 + 255 * (255 - a))
    coef2 = 255 * 128 - coef1
    tmp = rgba[..., :3].astype(np.uint32) * coef1 + 255 * coef2 + (0x80 << 7)
    out = ((((tmp >> 8) + tmp) >> 8) >> 7).astype(np.uint8)
    return np.where(a == 0, np.uint8(255), out)


def np_to_rgb(arr: np.ndarray, mode: str, palette: list[int] | None) -> np.ndarray:
    """Pillow's convert("RGB") for the modes these tests use."""
    if mode == "RGB":
        return arr
    if mode == "RGBA":
        return arr[..., :3]
    if mode == "L":
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "1":
        return np.repeat((arr.astype(np.uint8) * 255)[..., None], 3, axis=2)
    if mode == "LA":
        return np.repeat(arr[..., :1], 3, axis=2)
    if mode == "I;16":
        return np.repeat(np.minimum(arr, 255).astype(np.uint8)[..., None], 3, axis=2)
    if mode == "P":
        assert palette is not None
        return np.asarray(palette, np.uint8).reshape(-1, 3)[arr]
    raise AssertionError(f"no reference conversion for {mode}")


def vggt_input(path: Path) -> np.ndarray:
    """The (3, H, W) float32 array VGGT's crop-mode preprocessing makes of `path`."""
    with Image.open(path) as img:
        mode = img.mode
        arr = np.asarray(img)
        palette = img.getpalette() if mode == "P" else None
    if mode == "RGBA":
        arr = np.dstack([np_composite_on_white(arr), arr[..., 3]])
    rgb = np_to_rgb(arr, mode, palette)
    height, width = rgb.shape[:2]
    new_width = 518
    new_height = round(height * (new_width / width) / 14) * 14
    rgb = np_resize_bicubic(rgb, new_width, new_height)
    tensor = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    if new_height > 518:
        start_y = (new_height - 518) // 2
        tensor = tensor[:, start_y : start_y + 518, :]
    return tensor


def vggt_input_as_published(path: Path) -> np.ndarray:
    """VGGT's own steps with Pillow, torch's ToTensor replaced by its numpy equivalent."""
    img = Image.open(path)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    width, height = img.size
    new_width = 518
    new_height = round(height * (new_width / width) / 14) * 14
    img = img.resize((new_width, new_height), Image.Resampling.BICUBIC)
    tensor = np.asarray(img).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    if new_height > 518:
        start_y = (new_height - 518) // 2
        tensor = tensor[:, start_y : start_y + 518, :]
    return tensor


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_reference_port_agrees_with_vggt_as_published(case: str, originals: dict[str, Path]):
    assert np.array_equal(vggt_input(originals[case]), vggt_input_as_published(originals[case]))


@pytest.mark.parametrize("case", list(CASES))
def test_staged_file_gives_the_model_the_same_input(case: str, staged):
    files, _ = staged
    f = files[case]
    expected = vggt_input(f.source)
    got = vggt_input(f.path)
    assert expected.shape == got.shape
    assert expected.shape[0] == 3 and expected.shape[2] == 518 and expected.shape[1] <= 518
    assert np.array_equal(expected, got)
    assert f.bytes_sent == f.path.stat().st_size and f.bytes_original == f.source.stat().st_size


def test_what_was_resized(staged):
    files, prepared = staged
    for name in ("landscape", "portrait", "square", "panorama", "rgba", "grey", "exif_rotated"):
        assert files[name].resized, name
        assert files[name].path.suffix == ".png"
        assert files[name].bytes_sent < files[name].bytes_original
    tiny = files["tiny"]
    assert not tiny.resized and tiny.path.read_bytes() == tiny.source.read_bytes()
    assert prepared.bytes_sent == sum(f.bytes_sent for f in prepared.files)
    assert prepared.bytes_original == sum(f.source.stat().st_size for f in prepared.files)
    assert prepared.resized == [f.resized for f in prepared.files]
    # The crop is done here: the model-sized portrait is 518×518, not 518×770.
    with Image.open(files["portrait"].path) as img:
        assert img.size == (518, 518)
    # No EXIF orientation is applied: the rotated JPEG keeps its stored 4:3 landscape pixels.
    with Image.open(files["exif_rotated"].path) as img:
        assert img.size == (518, 392)
        assert not img.getexif().get(0x0112)


def test_grey_images_are_staged_as_greyscale(staged):
    files, _ = staged
    with Image.open(files["grey"].path) as img:
        assert img.mode == "L"


def test_names_keep_order_and_never_collide(tmp_path: Path):
    src_a, src_b = tmp_path / "one", tmp_path / "two"
    src_a.mkdir()
    src_b.mkdir()
    small = photo(300, 200, 11)
    paths = []
    for d, name in [(src_a, "b.jpg"), (src_a, "a.jpg"), (src_a, "a.png"), (src_b, "a.jpg")]:
        path = d / name
        small.save(path)
        paths.append(path)
    paths += [paths[0]] * 9  # the same file twice, and more than ten frames
    for presize in (True, False):
        prepared = prepare_upload(paths, tmp_path / f"out_{presize}", presize=presize)
        names = [p.name for p in prepared.paths]
        assert len(set(names)) == len(names)
        assert sorted(names) == names
        assert names[:4] == ["0000_b.jpg", "0001_a.jpg", "0002_a.png", "0003_a.jpg"]
        for staged_path, source in zip(prepared.paths, paths, strict=True):
            assert staged_path.read_bytes() == source.read_bytes()


def test_model_sized_image_is_sent_unchanged(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    exact = _jpeg(src / "exact.jpg", photo(518, 392, 12))
    before = sha(exact)
    prepared = prepare_upload([exact], tmp_path / "out")
    (f,) = prepared.files
    assert not f.resized
    assert sha(f.path) == before == sha(exact)
    assert prepared.bytes_sent == prepared.bytes_original == exact.stat().st_size


def test_original_sent_when_the_png_would_be_bigger(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    rough = src / "rough.jpg"
    photo(700, 525, 13, grain=40).save(rough, "JPEG", quality=3)
    prepared = prepare_upload([rough], tmp_path / "out")
    (f,) = prepared.files
    assert not f.resized
    assert f.path.read_bytes() == rough.read_bytes()


def test_unreadable_file_is_sent_as_is(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    odd = src / "photo.heic"
    odd.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(5000))
    (f,) = prepare_upload([odd], tmp_path / "out").files
    assert not f.resized and f.path.read_bytes() == odd.read_bytes()


def test_presize_off_sends_originals(originals: dict[str, Path], tmp_path: Path):
    prepared = prepare_upload(list(originals.values()), tmp_path / "out", presize=False)
    assert not any(prepared.resized)
    assert prepared.bytes_sent == prepared.bytes_original
    for f in prepared.files:
        assert f.path.read_bytes() == f.source.read_bytes()


def test_refuses_to_stage_into_the_originals_folder(originals: dict[str, Path]):
    first = next(iter(originals.values()))
    with pytest.raises(ValueError, match="must not be the folder"):
        prepare_upload([first], first.parent)


def test_phone_photos_shrink_and_stay_identical(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    paths = [
        _jpeg(src / "IMG_0001.jpg", photo(4032, 3024, 14)),
        _jpeg(src / "IMG_0002.jpg", photo(3024, 4032, 15)),
    ]
    before = [sha(p) for p in paths]
    prepared = prepare_upload(paths, tmp_path / "out")
    assert [sha(p) for p in paths] == before
    assert all(prepared.resized)
    assert prepared.bytes_sent <= 0.15 * prepared.bytes_original
    # Pillow's own steps here: the numpy port would take seconds on 12 megapixels.
    for f in prepared.files:
        assert np.array_equal(vggt_input_as_published(f.source), vggt_input_as_published(f.path))


@pytest.mark.parametrize(
    ("size", "resized", "model"),
    [
        ((4032, 3024), (518, 392), (518, 392)),
        ((3024, 4032), (518, 686), (518, 518)),
        ((1000, 1000), (518, 518), (518, 518)),
        ((518, 392), (518, 392), (518, 392)),
        ((2000, 400), (518, 98), (518, 98)),
        ((5000, 50), (518, 0), (518, 0)),
    ],
)
def test_sizes(size: tuple[int, int], resized: tuple[int, int], model: tuple[int, int]):
    assert resized_size(*size) == resized
    assert model_input_size(*size) == model


# --------------------------------------------------------------------------------------------
# Memory: an image costs about its decoded size to stage, whatever its mode.


def as_tensor(img: Image.Image) -> np.ndarray:
    return np.asarray(img).transpose(2, 0, 1).astype(np.float32) / np.float32(255)


@pytest.mark.parametrize("case", ["rgba", "grey", "palette", "grey16", "bilevel", "grey_alpha"])
@pytest.mark.parametrize("strip_pixels", [1, 5_000, 300_000])
def test_model_pixels_made_in_strips_are_exact(case, strip_pixels, originals):
    """One row, a few rows or a few hundred rows at a time: the same pixels as VGGT's steps."""
    with Image.open(originals[case]) as img:
        out = model_pixels(img, strip_pixels=strip_pixels)
    assert out is not None and out.mode == "RGB"
    assert np.array_equal(as_tensor(out), vggt_input_as_published(originals[case]))


BOMB_SIDE = 10_000
BOMB_PERIOD = 1250
# The peak RSS of this process's memory: VmHWM, as getrusage's ru_maxrss keeps the peak of the
# parent that forked the child (Linux folds the old memory's peak in at exec).
MEASURE = """
import json, re, sys, warnings
from pathlib import Path
from vggt_core.upload_prep import prepare_upload
def peak_kib():
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
source, dest = Path(sys.argv[1]), Path(sys.argv[2])
warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning above 89 megapixels
before = peak_kib()
prepared = prepare_upload([source], dest)
after = peak_kib()
print(json.dumps({"grew_kib": after - before, "path": str(prepared.paths[0]),
                  "resized": prepared.resized[0]}))
"""


def expected_stripes(side: int, period: int) -> np.ndarray:
    """The reference's (3, 518, 518) input for the stripes bomb, one row and one column at a time
    (every row is the same, so each column is constant: the two passes separate)."""
    row = np.array([255 * ((x // period) % 2) for x in range(side)], np.uint8)
    across = _resample_axis(np.repeat(row[None, :, None], 3, axis=2), 518, axis=1)[0, :, 0]
    down = {
        v: _resample_axis(np.full((side, 1, 1), v, np.uint8), 518, axis=0)[:, 0, 0]
        for v in np.unique(across)
    }
    plane = np.stack([down[v] for v in across], axis=1)  # (518 rows, 518 columns)
    return np.repeat(plane[None], 3, axis=0).astype(np.float32) / np.float32(255)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures VmHWM in /proc")
def test_a_one_bit_bomb_is_staged_right_within_its_decoded_size(tmp_path: Path):
    """A 100-megapixel 1-bit PNG of tens of KB: Pillow holds it as 100 MB (a byte a pixel);
    converting it to RGB whole cost 400 MB more. Staged in strips it costs about its decoded
    size, and the model still gets exactly VGGT's pixels."""
    source = tmp_path / "bomb.png"
    source.write_bytes(bilevel_stripes_png(BOMB_SIDE, BOMB_SIDE, BOMB_PERIOD))
    assert source.stat().st_size < 100_000
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(tmp_path / "staged")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    result = json.loads(done.stdout)
    decoded = BOMB_SIDE * BOMB_SIDE  # bytes: Pillow keeps a 1-bit pixel in a byte
    print(f"\nstaging the 1-bit bomb: peak RSS grew {result['grew_kib'] / 1024:.0f} MiB")
    assert result["grew_kib"] * 1024 < 2 * decoded
    assert result["resized"]
    with Image.open(result["path"]) as staged:
        assert staged.size == (518, 518)
        got = as_tensor(staged.convert("RGB"))
    assert np.array_equal(got, expected_stripes(BOMB_SIDE, BOMB_PERIOD))


def _open_sources(sources: set[str]) -> int:
    """How many of `sources` this process has open right now (read from /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target in sources:
                found.add(target)
    return len(found)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_runs_preparing_at_once_share_one_bound_on_photos_being_decoded(tmp_path: Path):
    """Four runs staging 12 MP photos at once never have more photos open than the limit."""
    src = tmp_path / "src"
    src.mkdir()
    paths = [_jpeg(src / f"IMG_{k:04d}.jpg", photo(4032, 3024, 20 + k)) for k in range(8)]
    sources = {str(p.resolve()) for p in paths}
    with pytest.raises(ValueError):
        set_parallel_images(0)
    set_parallel_images(1)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(_open_sources(sources))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(
                    lambda k: prepare_upload(paths[2 * k : 2 * k + 2], tmp_path / f"run{k}"),
                    range(4),
                )
            )
    finally:
        done.set()
        watcher.join()
        set_parallel_images(PARALLEL_IMAGES)
    assert all(all(r.resized) for r in results)
    assert max(seen) == 1  # photos were seen being read, one at a time across the four runs
