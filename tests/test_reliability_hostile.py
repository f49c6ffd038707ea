"""Hostile input lets nothing in: arbitrary uploads, run ids, settings, damaged files, bombs and
planted links end in a plain refusal, change nothing stored and reach nothing outside the root.

test_storage.py already feeds arbitrary run ids to every RunStore method and checks each kind
of planted link on the store; test_glb.py fuzzes the GLB parser. This suite builds on them:
uploads as whole batches, the executor's and the History page's run ids, settings dicts,
damaged metadata and index files, a damaged real stand-in GLB, bombs, and links end to end.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_images import gif_bytes, image_bytes, jpeg_bytes, png_bytes, png_claiming, zeros_png
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

pytest.register_assert_rewrite("app_fixtures")

from app_fixtures import HISTORY, open_page, texts  # noqa: E402

from vggt_core import (  # noqa: E402
    RunStatus,
    RunStore,
    StudioService,
    VGGTRun,
    VGGTSettings,
    describe_validation_error,
    load_config,
)
from vggt_core.errors import (  # noqa: E402
    ImagesRejected,
    StorageError,
)
from vggt_core.glb import GLBError, read_glb  # noqa: E402
from vggt_core.images import ImageRejected, check_image, is_plain_name  # noqa: E402
from vggt_core.local_space import (  # noqa: E402
    load_and_preprocess_images,
    predictions_to_glb,
    run_stand_in_model,
    write_sample_images,
)

pytest_plugins = ["app_fixtures"]

TRIED: collections.Counter[str] = collections.Counter()
CACHE_NAMES = {".index.json", ".changes", ".lock", ".worker"}  # derived caches and lock files
HYPOTHESIS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    print("\nhostile inputs tried per kind:", dict(sorted(TRIED.items())))


def tree(top: Path, *, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under `top`, links not followed: kind and content hash or link target."""
    result: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = [
            d for d in dirnames if d not in CACHE_NAMES and (skip is None or here / d != skip)
        ]
        for name in dirnames + filenames:
            if name in CACHE_NAMES or name.startswith((".tmp-.index.json", ".index.sqlite")):
                continue
            path = here / name
            rel = str(path.relative_to(top))
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                result[rel] = ("dir",)
            else:
                result[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return result


def offline_executor(store: RunStore) -> StudioService:
    """An executor whose backend is never reached (a run it takes fails at once)."""

    config = load_config({"VGGT_BACKEND": "http://127.0.0.1:9", "VGGT_CONNECT_TIMEOUT": 2})
    return StudioService(config, store=store)


# --- uploads: names and bytes --------------------------------------------------------------------

GOOD = {
    "png": png_bytes(64, 48, seed=1),
    "jpeg": jpeg_bytes(64, 48, seed=2),
    "webp": image_bytes("WEBP", 40, 30, seed=3),
    "bmp": image_bytes("BMP", 20, 20, seed=4),
    "tiff": image_bytes("TIFF", 20, 20, seed=5),
}
BAD = {
    "empty": b"",
    "gif": gif_bytes(),
    "bomb_header": png_claiming(50_000, 50_000),
    "bomb_real": zeros_png(12_000, 12_000),  # 144 megapixels in a few hundred KB
    "thin_strip": zeros_png(10, 400_000),  # 4 KB; VGGT's resize makes it 518×20,720,000
    "too_wide": zeros_png(100_000, 8),
    "html": b"<!doctype html><script>alert(1)</script>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
}
HOSTILE_NAMES = [
    "../../../escape.png",
    "/etc/passwd",
    "C:\\Windows\\system32\\x.jpg",
    "a\x00b.png",
    "\n\r\t.jpg",
    ".hidden.png",
    "..",
    ".",
    "CON",
    "metadata.json",
    "../metadata.json",
    "images/../../scene.glb",
    "é" * 300 + ".png",
    "x" * 5000,
    "\u202eevil\u202dgnp.exe",
    "",
]


@st.composite
def upload_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["good", "bad", "random", "cut", "flipped"]))
    if kind == "good":
        return GOOD[draw(st.sampled_from(sorted(GOOD)))]
    if kind == "bad":
        return BAD[draw(st.sampled_from(sorted(BAD)))]
    if kind == "random":
        return draw(st.binary(max_size=600))
    base = GOOD[draw(st.sampled_from(sorted(GOOD)))]
    if kind == "cut":
        return base[: draw(st.integers(0, len(base) - 1))]
    position = draw(st.integers(0, len(base) - 1))
    return (
        base[:position] + bytes([base[position] ^ draw(st.integers(1, 255))]) + base[position + 1 :]
    )


UPLOAD = st.tuples(st.one_of(st.text(max_size=120), st.sampled_from(HOSTILE_NAMES)), upload_bytes())


@pytest.fixture(scope="module")
def upload_sandbox(tmp_path_factory) -> tuple[Path, RunStore]:
    top = tmp_path_factory.mktemp("uploads")
    (top / "outside.png").write_bytes(GOOD["png"])
    store = RunStore(top / "storage", max_images=4, max_image_bytes=200_000)
    return top, store


def _accepted(name: str, data: bytes, store: RunStore) -> bool:
    try:
        check_image(name, data, max_bytes=store.max_image_bytes, max_pixels=store.max_image_pixels)
    except ImageRejected:
        return False
    return True


@settings(max_examples=150, **HYPOTHESIS)
@given(batch=st.lists(UPLOAD, min_size=1, max_size=6), already=st.integers(0, 2))
@example(batch=[("a.png", b"")], already=0)  # a 0-byte upload
@example(batch=[(f"{i}.png", GOOD["png"]) for i in range(5)], already=0)  # over the limit
@example(batch=[("strip.png", BAD["thin_strip"])], already=1)
def test_property_uploads_all_or_nothing_and_inside_the_run(upload_sandbox, batch, already):
    top, store = upload_sandbox
    TRIED["upload batches"] += 1
    TRIED["uploaded files"] += len(batch)
    run_id = store.create_run().run_id
    if already:
        store.add_images(run_id, [(f"old{i}.jpg", GOOD["jpeg"]) for i in range(already)])
    folder = store.run_dir(run_id)
    outside, before = tree(top, skip=store.root), tree(store.root)
    expected = len(batch) + already <= store.max_images and all(
        _accepted(name, data, store) for name, data in batch
    )
    try:
        names = store.add_images(run_id, batch)
    except ImagesRejected as exc:
        assert not expected, exc
        assert exc.problems and str(exc).startswith("No image was stored.")
        assert tree(store.root) == before
    else:
        assert expected
        assert len(names) == len(batch) == len(set(names))
        stored = store.load(run_id).images
        for name, (_, data) in zip(names, batch, strict=True):
            assert is_plain_name(name) and name in stored
            path = folder / "images" / name
            assert path.parent == folder / "images" and not path.is_symlink()
            assert path.read_bytes() == data
        assert [p.name for p in store.image_paths(run_id)] == sorted(stored)
    assert tree(top, skip=store.root) == outside


def test_bombs_are_refused_before_they_cost_memory(upload_sandbox):
    """Each bomb is a few KB that decodes, or that VGGT's resize would blow up, to gigabytes."""
    _, store = upload_sandbox
    run_id = store.create_run().run_id
    reasons = {}
    for kind in ("bomb_header", "bomb_real", "thin_strip", "too_wide", "empty"):
        started = time.monotonic()
        with pytest.raises(ImagesRejected) as info:
            store.add_images(run_id, [(f"{kind}.png", BAD[kind])])
        assert time.monotonic() - started < 2, kind
        reasons[kind] = info.value.problems[0].reason
        TRIED["bombs and empty files"] += 1
    assert "far more pixels" in reasons["bomb_header"] or "megapixels" in reasons["bomb_header"]
    assert "megapixels" in reasons["bomb_real"] or "far more pixels" in reasons["bomb_real"]
    assert reasons["thin_strip"] == (
        "it is 10×400000: too tall for the model (more than 64 times as tall as wide)"
    )
    assert "too wide" in reasons["too_wide"]
    assert reasons["empty"] == "the file is empty"
    assert store.add_images(run_id, [("fine.png", GOOD["png"])]) == ["fine.png"]


# --- run ids into the executor and the History page ---------------------------------------------

RUN_IDS = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"run_[0-9]{13}_[a-z0-9]{6}", fullmatch=True),  # well formed, absent
    st.builds(
        lambda prefix, suffix: f"{prefix}run_1700000000000_abcdef{suffix}",
        st.sampled_from(["", "../", "/", " ", "runs/", "..\\"]),
        st.sampled_from(["", "/", "/..", "\x00", "\n", " ", "/../../etc", "ü"]),
    ),
)


@settings(max_examples=150, **HYPOTHESIS)
@given(run_id=RUN_IDS)
def test_property_executor_refuses_any_run_id_it_does_not_hold(tmp_path_factory, run_id):
    top = tmp_path_factory.mktemp("exec_ids")
    store = RunStore(top / "storage")
    real = store.create_run().run_id
    store.add_images(real, [("a.png", GOOD["png"])])
    executor = offline_executor(store)
    threads = threading.active_count()
    before = tree(top)
    TRIED["executor run ids"] += 1
    try:
        for call in (executor.start, executor.retry, executor.cancel, executor.wait):
            with pytest.raises(StorageError):
                call(run_id)
        assert executor.is_running_here(run_id) is False
        assert tree(top) == before
        assert threading.active_count() == threads  # no worker was started
        assert store.load(real).status is RunStatus.queued
    finally:
        executor.close()


@pytest.mark.slow
def test_property_history_deep_link_with_any_value(app_env):
    real = app_env.store.create_run().run_id
    at = open_page(HISTORY)
    before = tree(app_env.storage)
    outside = tree(app_env.storage.parent, skip=app_env.storage)

    @settings(max_examples=20, **HYPOTHESIS)
    @given(value=st.one_of(RUN_IDS, st.just(real), st.just(real.upper()), st.just(real + "/")))
    @example(value="../../etc/passwd")
    @example(value="<script>alert(1)</script>")
    def visit(value: str) -> None:
        TRIED["History deep links"] += 1
        at.query_params["run"] = value
        at.run()
        assert not at.exception, (value, at.exception)
        if value == real:
            assert any(real in s.value for s in at.subheader)
        else:
            assert any("No such run" in e for e in texts(at.error)), value
        assert tree(app_env.storage) == before
        assert tree(app_env.storage.parent, skip=app_env.storage) == outside

    visit()


# --- settings -------------------------------------------------------------------------------------

SETTING_KEYS = [
    "confThreshold",
    "conf_threshold",
    "predictionMode",
    "prediction_mode",
    "maskBlackBg",
    "maskWhiteBg",
    "maskSky",
    "showCameras",
    "show_cameras",
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["pointmap", "depth", "50", "true", "NaN", "inf", ""]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, **HYPOTHESIS)
@given(
    data=st.dictionaries(
        st.sampled_from(SETTING_KEYS) | st.text(max_size=30), JSON_VALUES, max_size=6
    )
)
def test_property_settings_dicts_validate_or_say_why(data):
    TRIED["settings dicts"] += 1
    try:
        parsed = VGGTSettings.model_validate(data)
    except ValidationError as exc:
        text = describe_validation_error(exc)
        assert isinstance(text, str) and text.strip()
        assert "Traceback" not in text and "pydantic" not in text.lower()
        assert text.count(".") >= exc.error_count()  # one sentence per problem
        return
    assert 0 <= parsed.conf_threshold <= 100
    assert parsed.prediction_mode in ("pointmap", "depth")
    VGGTSettings.model_validate_json(parsed.model_dump_json(by_alias=True))


# --- damaged metadata, index and GLB --------------------------------------------------------------


TEMPLATE_ID = "run_1700000000000_abcdef"
TEMPLATE = VGGTRun(run_id=TEMPLATE_ID).to_json_dict()


def _mutate(key: str, value: object, drop: bool) -> bytes:
    data = dict(TEMPLATE)
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    return json.dumps(data).encode()


MUTATED = st.builds(_mutate, st.sampled_from(sorted(TEMPLATE)), JSON_VALUES, st.booleans())


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> tuple[RunStore, list[str], bytes]:
    store = RunStore(tmp_path_factory.mktemp("damaged") / "storage")
    ids = []
    for _ in range(3):
        run_id = store.create_run().run_id
        while ids and run_id[:17] == ids[-1][:17]:  # distinct milliseconds: a stable order
            store.delete_run(run_id)
            time.sleep(0.002)
            run_id = store.create_run().run_id
        ids.append(run_id)
    victim_meta = (store.run_dir(ids[1]) / "metadata.json").read_bytes()
    return store, ids, victim_meta


DAMAGED = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"[" * 100_000, b'{"a":' * 50_000, b"null", b"\xff" * 10]),
)


@settings(max_examples=120, **HYPOTHESIS)
@given(content=DAMAGED | MUTATED)
@example(content=b"[" * 100_000)  # nested past the JSON parser's recursion limit
@example(content=b"")
def test_property_damaged_metadata_is_named_and_the_rest_still_list(three_runs, content):
    store, ids, original = three_runs
    victim = ids[1]
    content = content.replace(TEMPLATE_ID.encode(), victim.encode())
    TRIED["damaged metadata.json"] += 1
    meta = store.run_dir(victim) / "metadata.json"
    meta.write_bytes(content)
    try:
        fresh = RunStore(store.root)  # as the app would after the file changed
        page = fresh.list_runs()
        assert page.total == 3
        assert [r.run_id for r in page.runs if r.run_id != victim] == [ids[2], ids[0]]
        assert [b.run_id for b in page.broken] in ([], [victim])
        if page.broken:
            assert victim in page.broken[0].reason and "\n" not in page.broken[0].reason
        counts = fresh.counts()
        assert sum(counts.values()) == 3
        for status in RunStatus:
            fresh.list_runs(status=status)
        fresh.list_runs(query="png")
        executor = offline_executor(fresh)
        try:
            executor.recover()  # start-up with a damaged run must not fail
        finally:
            executor.close()
        assert fresh.load(ids[0]).status is RunStatus.queued
    finally:
        meta.write_bytes(original)


@settings(max_examples=60, **HYPOTHESIS)
@given(content=DAMAGED)
@example(content=b"[]")
@example(content=b'{"run_1700000000000_abcdef": [1, 2, "queued", [1, 2]]}')
def test_property_damaged_index_file_is_rebuilt(three_runs, content):
    store, ids, _ = three_runs
    TRIED["damaged .index.sqlite"] += 1
    (store.root / ".index.sqlite").write_bytes(content)
    fresh = RunStore(store.root)
    assert fresh.counts()["queued"] == 3
    assert fresh.list_runs(status="queued").total == 3
    assert fresh.list_runs(query=ids[0][-6:]).total == 1


@pytest.fixture(scope="module")
def stand_in_glb(tmp_path_factory) -> bytes:
    """A real GLB as the stand-in builds it (points and camera cones), small."""
    folder = tmp_path_factory.mktemp("glb_images")
    predictions = run_stand_in_model(
        load_and_preprocess_images(write_sample_images(folder, count=2, size=(64, 48)))
    )
    scene = predictions_to_glb(predictions, conf_thres=95.0, show_cam=True)
    return scene.export(file_type="glb")


@settings(max_examples=80, **HYPOTHESIS)
@given(data=st.data())
def test_property_damaged_scene_glb_raises_glberror_only(tmp_path_factory, stand_in_glb, data):
    TRIED["damaged scene.glb"] += 1
    size = len(stand_in_glb)
    how = data.draw(st.sampled_from(["truncate", "overwrite", "append", "header", "empty"]))
    if how == "truncate":
        damaged = stand_in_glb[: data.draw(st.integers(0, size - 1))]
    elif how == "overwrite":
        at = data.draw(st.integers(0, size - 1))
        damaged = stand_in_glb[:at] + data.draw(st.binary(min_size=1, max_size=64))
        damaged += stand_in_glb[at + 64 :]
    elif how == "append":
        damaged = stand_in_glb + data.draw(st.binary(min_size=1, max_size=64))
    elif how == "header":
        damaged = stand_in_glb[:8] + data.draw(st.binary(min_size=4, max_size=4))
        damaged += stand_in_glb[12:]
    else:
        damaged = b""
    store = RunStore(tmp_path_factory.mktemp("glb") / "storage")
    run_id = store.create_run().run_id
    store.save_artifact(run_id, "glb", damaged)
    try:
        scene = read_glb(store.artifact_path(run_id, "glb"))
    except GLBError as exc:
        assert str(exc).startswith("scene.glb")
        return
    assert damaged != stand_in_glb[: len(damaged)] or len(damaged) == size
    assert scene.points.shape[0] == scene.colors.shape[0]


# --- planted links, end to end ------------------------------------------------------------------


def test_planted_links_are_never_followed_by_a_run(local_space, tmp_path):
    """A run folder holding links to files outside the root: the run sends only its own image,
    replaces the link where its GLB goes, and Retry and start-up clean-up remove links only."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = png_bytes(80, 60, seed=99)
    (outside / "secret.png").write_bytes(secret)
    (outside / "secret.glb").write_bytes(b"not yours")
    store = RunStore(tmp_path / "storage")
    run_id = store.create_run().run_id
    store.add_images(run_id, [("mine.png", GOOD["png"])])
    folder = store.run_dir(run_id)
    (folder / "images" / "planted.png").symlink_to(outside / "secret.png")
    store.update(run_id, lambda r: setattr(r, "images", [*r.images, "planted.png"]))
    (folder / "scene.glb").symlink_to(outside / "secret.glb")
    (folder / "predictions.npz").symlink_to(outside / "secret.glb")
    (folder / ".tmp-scene.glb.planted").symlink_to(outside / "secret.glb")
    before = tree(outside)
    TRIED["planted links"] += 4

    config = load_config({"VGGT_BACKEND": local_space.url})
    executor = StudioService(config, store=store)
    try:
        assert not store.artifact_exists(run_id, "glb")
        executor.start(run_id)
        run = executor.wait(run_id, timeout=60)
    finally:
        executor.close()
    assert run.status is RunStatus.completed, run.error
    upload = next(
        r for r in reversed(local_space.received) if r["endpoint"] == "/update_gallery_on_upload"
    )
    assert len(upload["files"]) == 1
    assert hashlib.sha256(secret).hexdigest() not in {f["sha256"] for f in upload["files"]}
    assert not (folder / "scene.glb").is_symlink()
    assert len(read_glb(folder / "scene.glb").points) > 1000

    def interrupted(r: VGGTRun) -> None:
        r.status = RunStatus.fetching

    store.update(run_id, interrupted)  # as if the app died while downloading
    (folder / ".tmp-scene.glb.again").symlink_to(outside / "secret.glb")
    restarted = StudioService(config, store=RunStore(store.root))
    try:
        restarted.recover()  # removes the leftovers: the links themselves, not their targets
        assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
        restarted.retry(run_id)
        assert restarted.wait(run_id, timeout=60).status is RunStatus.completed
    finally:
        restarted.close()
    store.delete_run(run_id)
    assert tree(outside) == before
    assert not folder.exists()


def test_images_sent_match_what_was_stored_not_what_a_link_points_to(tmp_path):
    """A stored image swapped for a link after the upload is skipped, never read."""
    store = RunStore(tmp_path / "storage")
    run_id = store.create_run().run_id
    store.add_images(run_id, [("a.png", GOOD["png"]), ("b.jpg", GOOD["jpeg"])])
    (tmp_path / "secret.png").write_bytes(png_bytes(seed=42))
    target = store.run_dir(run_id) / "images" / "b.jpg"
    target.unlink()
    target.symlink_to(tmp_path / "secret.png")
    TRIED["planted links"] += 1
    assert [p.name for p in store.image_paths(run_id)] == ["a.png"]
