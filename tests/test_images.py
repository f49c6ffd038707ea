"""Uploaded images: real formats only, within limits, stored under safe, unique base names."""

from __future__ import annotations

import io
import os
import string
import unicodedata
import warnings
from pathlib import Path

import pytest
from helpers_images import (
    gif_bytes,
    image_bytes,
    jpeg_bytes,
    png_bytes,
    png_claiming,
    run_files,
    zeros_png,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vggt_core.errors import ImageRejected, ImagesRejected
from vggt_core.errors import _display_name as display_name
from vggt_core.images import (
    FORMAT_EXTENSIONS,
    check_image,
    is_plain_name,
    safe_image_name,
    unique_names,
    upload_limit_mb,
)
from vggt_core.storage import RunStore

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}
EXTENSIONS = sorted(set(FORMAT_EXTENSIONS.values()))


def assert_safe_name(name: str, extension: str) -> None:
    """What every stored image name must be: one plain, printable, bounded path component."""
    assert name.endswith(extension)
    assert len(name) > len(extension)
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert name.isprintable(), repr(name)
    assert name not in {".", ".."}
    assert not name.startswith(".")
    assert len(name.encode()) <= 255
    assert os.path.basename(name) == name
    assert Path(name).name == name
    assert is_plain_name(name)


def stored_files(store: RunStore, run_id: str) -> list[str]:
    return sorted(os.listdir(store.run_dir(run_id) / "images"))


# --- check_image -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "extension"), sorted(FORMAT_EXTENSIONS.items()))
def test_each_supported_format_is_recognised_by_its_content(fmt, extension):
    data = image_bytes(fmt)
    assert check_image("whatever.name", data, **LIMITS) == extension


def test_extension_comes_from_the_content_not_the_name():
    assert check_image("photo.jpg", png_bytes(), **LIMITS) == ".png"
    assert check_image("photo.png", jpeg_bytes(), **LIMITS) == ".jpg"
    assert check_image("photo", jpeg_bytes(), **LIMITS) == ".jpg"


def _reason(name: str, data: bytes, **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        check_image(name, data, **{**LIMITS, **limits})
    error = info.value
    assert error.name == name
    assert str(error).startswith(f"{display_name(name)}: ")
    assert error.reason in str(error)
    return error


def test_empty_file_is_rejected():
    assert _reason("empty.jpg", b"").reason == "the file is empty"


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is text and not a picture\n",
        b"<html><body>not an image</body></html>",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        bytes(range(256)) * 8,
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
    ],
)
def test_non_images_are_rejected(data):
    error = _reason("notes.jpg", data)
    assert "not an image" in error.reason or "damaged" in error.reason


def test_unsupported_image_format_is_rejected_with_the_format_named():
    error = _reason("anim.gif", gif_bytes())
    assert "GIF" in error.reason
    assert "not supported" in error.reason


@pytest.mark.parametrize("make", [jpeg_bytes, png_bytes])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_images_are_rejected(make, keep):
    data = make(96, 72)
    error = _reason("cut.img", data[: int(len(data) * keep)])
    assert "damaged or truncated" in error.reason


def test_too_large_file_is_rejected_with_the_sizes():
    data = jpeg_bytes()
    error = _reason("big.jpg", data, max_bytes=len(data) - 1)
    assert "over the limit" in error.reason
    assert check_image("big.jpg", data, **{**LIMITS, "max_bytes": len(data)}) == ".jpg"


def test_decompression_bomb_header_is_rejected_without_decoding():
    bomb = png_claiming(50_000, 50_000)
    assert len(bomb) < 100
    error = _reason("bomb.png", bomb, max_pixels=10**12)
    assert "pixels" in error.reason


def test_image_over_the_pixel_limit_is_rejected():
    data = zeros_png(2000, 1500)  # real and decodable, 3 megapixels in a few kB
    assert len(data) < 20_000
    error = _reason("many_pixels.png", data, max_pixels=1_000_000)
    assert "2000×1500" in error.reason
    assert check_image("ok.png", data, **{**LIMITS, "max_pixels": 3_000_000}) == ".png"


@pytest.mark.parametrize(
    ("size", "limit", "shown"),
    [
        ((2000, 1000), 1_500_000, "1.5 megapixels"),
        ((12_000, 9000), 100_000_000, "100 megapixels"),  # over Pillow's own 89 MP warning
    ],
)
def test_pixel_limit_is_the_configured_one(size, limit, shown):
    error = _reason("large.png", png_claiming(*size), max_pixels=limit)
    assert error.reason == f"it is {size[0]}×{size[1]} pixels, over the limit of {shown}"


def test_image_under_the_configured_limit_but_over_pillows_default_is_accepted():
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.new("1", (10_000, 9500)).save(buffer, format="PNG")  # 95 MP in about 12 kB
    data = buffer.getvalue()
    assert check_image("scan.png", data, max_bytes=len(data), max_pixels=100_000_000) == ".png"
    _reason("scan.png", data, max_pixels=94_999_999)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (0, 0)])
def test_zero_sized_image_is_rejected(width, height):
    _reason("zero.png", png_claiming(width, height))


def test_image_too_wide_for_the_model_is_rejected():
    error = _reason("panorama.png", png_bytes(2000, 20))
    assert "too wide" in error.reason


def test_rejection_message_shows_a_printable_bounded_name():
    name = "evil\x00\x1b[31m" + "n" * 200 + ".jpg"
    error = _reason(name, b"")
    shown = str(error)
    assert shown.isprintable()
    assert "\x00" not in shown
    assert len(shown.split(": ")[0]) <= 80


# --- safe_image_name and unique_names ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "extension", "expected"),
    [
        ("photo.jpg", ".jpg", "photo.jpg"),
        ("photo.JPG", ".jpg", "photo.jpg"),
        ("photo.jpg", ".png", "photo.png"),
        ("photo", ".jpg", "photo.jpg"),
        ("../../x.jpg", ".jpg", "x.jpg"),
        ("/etc/passwd", ".png", "passwd.png"),
        ("C:\\Users\\me\\Pictures\\IMG_0001.JPG", ".jpg", "IMG_0001.jpg"),
        ("..\\..\\windows\\x.jpg", ".jpg", "x.jpg"),
        ("a\x00b.jpg", ".jpg", "ab.jpg"),
        ("line\nbreak\ttab\r.jpg", ".jpg", "linebreaktab.jpg"),
        ("my photo (1).jpeg", ".jpg", "my_photo_(1).jpg"),
        ("archive.tar.gz.png", ".png", "archive_tar_gz.png"),
        ("", ".jpg", "image.jpg"),
        (".", ".jpg", "image.jpg"),
        ("..", ".jpg", "image.jpg"),
        ("...", ".jpg", "image.jpg"),
        (".hidden", ".png", "hidden.png"),
        ("dir/", ".jpg", "image.jpg"),
        ("___.jpg", ".jpg", "image.jpg"),
        ("café.jpg", ".jpg", "café.jpg"),
        (unicodedata.normalize("NFD", "café.jpg"), ".jpg", "café.jpg"),
        ("写真.png", ".png", "写真.png"),
    ],
)
def test_safe_image_name_examples(raw, extension, expected):
    name = safe_image_name(raw, extension)
    assert name == expected
    assert_safe_name(name, extension)


def test_safe_image_name_bounds_long_names():
    # 2-, 3- and 4-byte letters: 80 of the last would be 320 bytes, over a file name's 255.
    for raw in [
        "a" * 300 + ".jpg",
        "é" * 300,
        "写" * 300 + ".jpg",
        "𠀀" * 300 + ".jpg",
        "x" * 5000,
    ]:
        name = safe_image_name(raw, ".jpg")
        assert_safe_name(name, ".jpg")
        assert len(name.encode()) <= 200


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x.jpg",
        "a/b.jpg",
        "a\\b.jpg",
        "/abs.jpg",
        ".hidden.jpg",
        "nul\x00.jpg",
        "tab\t.jpg",
        "x" * 252 + ".jpg",
        "😀" * 63 + ".jpg",
    ],
)
def test_plain_name_refuses_anything_but_one_plain_component(name):
    assert not is_plain_name(name)


@pytest.mark.parametrize(
    "name", ["IMG 0001.JPG", "frame.000.jpg", "写真.png", "+(1).jpg", "x" * 251 + ".jpg"]
)
def test_plain_name_accepts_names_an_earlier_system_stored(name):
    assert is_plain_name(name)


def test_unique_names_are_unique_case_insensitively():
    names = unique_names(["a.jpg", "A.jpg", "a.jpg", "b.png", "a_2.jpg"], ["A.JPG", "c.png"])
    assert names == ["a_2.jpg", "A_3.jpg", "a_4.jpg", "b.png", "a_2_2.jpg"]
    lowered = [n.lower() for n in [*names, "a.jpg", "c.png"]]
    assert len(set(lowered)) == len(lowered)


_WIDE_LETTERS = st.sampled_from("a_é写𠀀𝒜Ω-. /\\")


@settings(max_examples=200, deadline=None)
@given(
    raw=st.one_of(st.text(max_size=400), st.text(_WIDE_LETTERS, min_size=50, max_size=400)),
    extension=st.sampled_from(EXTENSIONS),
)
def test_property_safe_image_name_is_always_a_safe_base_name(raw, extension):
    assert_safe_name(safe_image_name(raw, extension), extension)


_PATHISH = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["..", ".", "/", "\\", "\x00", "C:", "~", "", "\n", "😀", "é", "İ"]),
    ),
    max_size=8,
).map("/".join)


@settings(max_examples=150, deadline=None)
@given(
    wanted=st.lists(st.one_of(st.text(max_size=300), _PATHISH), min_size=1, max_size=6),
    taken=st.lists(st.text(max_size=30), max_size=4),
    extension=st.sampled_from(EXTENSIONS),
)
def test_property_unique_names_stay_safe_and_unique(wanted, taken, extension):
    taken = [safe_image_name(t, extension) for t in taken]
    safe = [safe_image_name(w, extension) for w in wanted]
    names = unique_names(safe, taken)
    assert len(names) == len(safe)
    lowered = [n.lower() for n in names]
    assert len(set(lowered)) == len(lowered)
    assert not set(lowered) & {t.lower() for t in taken}
    for name in names:
        assert_safe_name(name, extension)


# --- names and contents through the store --------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "storage")


HOSTILE_NAMES = [
    "../../x.jpg",
    "/etc/passwd.jpg",
    str(Path("/tmp/absolute/photo.jpg")),
    "..\\..\\win.jpg",
    "nul\x00byte.jpg",
    "ctrl\x01\x1f\x7f.jpg",
    "a" * 300 + ".jpg",
    "Photo.jpg",
    "photo.jpg",
    "PHOTO.JPG",
    "photo.jpg",
    "noextension",
    "png_named.jpg",
    "café.jpg",
    unicodedata.normalize("NFD", "café.jpg"),
    "写真.jpg",
    "..",
    "",
]


def test_hostile_names_are_stored_as_safe_unique_base_names(store, tmp_path):
    run = store.create_run()
    files = [
        (name, png_bytes(seed=i) if name == "png_named.jpg" else jpeg_bytes(seed=i))
        for i, name in enumerate(HOSTILE_NAMES)
    ]
    before_outside = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    names = store.add_images(run.run_id, files)

    assert len(names) == len(files)
    lowered = [n.lower() for n in names]
    assert len(set(lowered)) == len(names)
    for (raw, data), name in zip(files, names, strict=True):
        extension = ".png" if raw == "png_named.jpg" else ".jpg"
        assert_safe_name(name, extension)
        stored = store.run_dir(run.run_id) / "images" / name
        assert stored.is_file()
        assert stored.read_bytes() == data
    assert names[HOSTILE_NAMES.index("png_named.jpg")] == "png_named.png"
    assert names[0] == "x.jpg"
    assert names[HOSTILE_NAMES.index("noextension")] == "noextension.jpg"

    assert stored_files(store, run.run_id) == sorted(names)
    loaded = store.load(run.run_id)
    assert loaded.images == sorted(names)
    assert [p.name for p in store.image_paths(run.run_id)] == sorted(names)
    # Nothing appeared outside the store's root.
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for path in set(after) - set(before_outside):
        assert (tmp_path / path).is_relative_to(store.root), path
    assert not (tmp_path / "x.jpg").exists()
    assert not Path("/tmp/absolute/photo.jpg").exists()


def test_long_names_sharing_a_prefix_are_all_kept_and_used(store):
    run = store.create_run()
    prefix = "scan_of_the_north_facade_" * 5
    files = [(f"{prefix}{i:04d}.jpg", jpeg_bytes(seed=i)) for i in range(3)]
    names = store.add_images(run.run_id, files)
    assert len(set(names)) == 3
    paths = store.image_paths(run.run_id)
    assert [p.name for p in paths] == sorted(names)
    assert sorted(p.read_bytes() for p in paths) == sorted(d for _, d in files)


def test_names_cut_at_an_underscore_or_in_wide_characters_are_used(store):
    run = store.create_run()
    files = [
        ("a" * 79 + "_b.jpg", jpeg_bytes(seed=1)),
        ("𠀀" * 100 + ".jpg", jpeg_bytes(seed=2)),
        ("𠀀" * 100 + "x.jpg", jpeg_bytes(seed=3)),
    ]
    names = store.add_images(run.run_id, files)
    assert [p.name for p in store.image_paths(run.run_id)] == sorted(names)


def test_names_differing_only_in_case_do_not_overwrite_each_other(store):
    run = store.create_run()
    first = store.add_images(run.run_id, [("IMG.jpg", jpeg_bytes(seed=1))])
    second = store.add_images(
        run.run_id, [("img.JPG", jpeg_bytes(seed=2)), ("Img.jpg", jpeg_bytes(seed=3))]
    )
    assert first == ["IMG.jpg"]
    assert len({n.lower() for n in first + second}) == 3
    contents = {p.read_bytes() for p in store.image_paths(run.run_id)}
    assert contents == {jpeg_bytes(seed=s) for s in (1, 2, 3)}


def test_bad_files_are_named_with_their_reason(tmp_path):
    store = RunStore(tmp_path / "storage", max_image_bytes=200_000, max_image_pixels=1_000_000)
    run = store.create_run()
    good = jpeg_bytes()
    batch = [
        ("good.jpg", good),
        ("notes.txt", b"just some text"),
        ("half.jpg", good[: len(good) // 2]),
        ("empty.png", b""),
        ("bomb.png", png_claiming(50_000, 50_000)),
        ("megapixels.png", zeros_png(2000, 1500)),
        ("huge.bmp", image_bytes("BMP", 400, 300)),
        ("anim.gif", gif_bytes()),
    ]
    with pytest.raises(ImagesRejected) as info:
        store.add_images(run.run_id, batch)
    problems = {p.name: p.reason for p in info.value.problems}
    assert set(problems) == {name for name, _ in batch[1:]}
    assert "not an image" in problems["notes.txt"]
    assert "truncated" in problems["half.jpg"]
    assert "empty" in problems["empty.png"]
    assert "pixels" in problems["bomb.png"]
    assert "2000×1500" in problems["megapixels.png"]
    assert "over the limit" in problems["huge.bmp"]
    assert "GIF" in problems["anim.gif"]
    message = str(info.value)
    for name, _ in batch[1:]:
        assert name in message
    assert "good.jpg" not in message
    assert stored_files(store, run.run_id) == []
    assert store.load(run.run_id).images == []


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("prop") / "storage", max_images=100_000)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    names=st.lists(
        st.one_of(st.text(max_size=300), _PATHISH, st.sampled_from(["a.jpg", "A.JPG", "a.png"])),
        min_size=1,
        max_size=4,
    )
)
def test_property_add_images_lands_every_name_inside_images(shared_store, names):
    store = shared_store
    run = store.create_run()
    data = jpeg_bytes(24, 18)
    stored = store.add_images(run.run_id, [(n, data) for n in names])
    images_dir = store.run_dir(run.run_id) / "images"
    assert len(stored) == len(names)
    assert len({s.lower() for s in stored}) == len(stored)
    for name in stored:
        assert_safe_name(name, ".jpg")
        path = images_dir / name
        assert path.resolve().parent == images_dir.resolve()
        assert path.is_file()
    assert sorted(os.listdir(images_dir)) == sorted(stored)
    assert [p.name for p in store.image_paths(run.run_id)] == sorted(stored)
    assert run_files(store.run_dir(run.run_id)) == ["images", "metadata.json"]


def test_only_printable_ascii_is_kept_for_an_ascii_alphabet():
    allowed = set(string.ascii_letters + string.digits + "_-+()")
    name = safe_image_name("we!rd #name$ with %chars&*.jpg", ".jpg")
    assert set(name.removesuffix(".jpg")) <= allowed


def test_a_pixel_bomb_is_refused_with_its_size_and_the_limit():
    data = zeros_png(20_000, 20_000)  # 400 megapixels: past Pillow's own bomb guard
    with pytest.raises(ImageRejected) as info:
        check_image("bomb.png", data, max_bytes=10**8, max_pixels=100_000_000)
    assert "400 megapixels" in info.value.reason
    assert "the limit of 100 megapixels" in info.value.reason


def test_sizes_are_said_in_the_unit_the_uploader_shows():
    # Streamlit's uploader counts a MB as 2**20 bytes and says "30MB": the app says the same.
    data = jpeg_bytes(40, 30) + b"\0" * (31 * 2**20)
    with pytest.raises(ImageRejected) as info:
        check_image("big.jpg", data, max_bytes=30 * 2**20, max_pixels=10**8)
    assert info.value.reason == "it is 31.0 MB, over the limit of 30 MB"
    assert upload_limit_mb(30 * 2**20) == 30
