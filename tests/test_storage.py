"""RunStore: the layout on disk, all-or-nothing images, hostile ids and links, locking, listing."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import string
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_images import jpeg_bytes, png_bytes, png_claiming, run_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggt_core._atomic import temp_sibling
from vggt_core.errors import ImagesRejected, InvalidRunId, RunBusy, RunNotFound, StorageError
from vggt_core.models import RunStatus, VGGTRun, VGGTSettings, utc_now
from vggt_core.storage import RunStore, is_valid_run_id

JPEG = jpeg_bytes()
PNG = png_bytes()
ID_SHAPE = re.compile(r"run_[0-9]{13}_[a-z0-9]{6}", re.ASCII)
VALID_BUT_ABSENT = "run_1700000000000_abcdef"


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "storage")


def snapshot(top: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Every entry under `top` (links not followed): kind and content or link target."""
    result: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(top))
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                result[rel] = ("dir", None)
            else:
                result[rel] = ("file", path.read_bytes())
    return result


def set_status(store: RunStore, run_id: str, status: RunStatus, **changes) -> VGGTRun:
    return store.update(run_id, lambda r: r.model_copy(update={"status": status, **changes}))


def _increment(run: VGGTRun) -> None:
    run.counter = (run.model_extra or {}).get("counter", 0) + 1


def make_runs(store: RunStore, count: int) -> list[str]:
    """`count` runs created a millisecond or more apart, oldest first."""
    ids: list[str] = []
    for _ in range(count):
        run = store.create_run()
        while ids and run.run_id[:17] == ids[-1][:17]:
            store.delete_run(run.run_id)
            time.sleep(0.001)
            run = store.create_run()
        ids.append(run.run_id)
    return ids


# --- layout on disk ------------------------------------------------------------------------------


def test_create_run_lays_out_folder_images_and_metadata(store):
    before = datetime.now(UTC) - timedelta(seconds=1)
    settings_ = VGGTSettings(conf_threshold=20, prediction_mode="pointmap")
    run = store.create_run(settings_, backend="http://127.0.0.1:7860", presize=False)
    assert ID_SHAPE.fullmatch(run.run_id)
    folder = store.root / "runs" / run.run_id
    assert folder.is_dir()
    assert run_files(folder) == ["images", "metadata.json"]
    assert os.listdir(folder / "images") == []
    data = json.loads((folder / "metadata.json").read_text())
    assert data["runId"] == run.run_id
    assert data["status"] == "queued"
    assert data["settings"]["confThreshold"] == 20
    assert data["settings"]["predictionMode"] == "pointmap"
    assert data["images"] == []
    assert data["backend"] == "http://127.0.0.1:7860"
    assert data["presize"] is False
    assert data["submittedAt"] is None
    assert before <= datetime.fromisoformat(data["requestedAt"]) <= datetime.now(UTC)
    assert store.load(run.run_id) == run
    assert store.run_dir(run.run_id) == folder


def test_run_ids_are_unique_and_survive_a_new_store(tmp_path):
    store = RunStore(tmp_path / "storage")
    ids = {store.create_run().run_id for _ in range(40)}
    assert len(ids) == 40
    again = RunStore(tmp_path / "storage")
    assert set(again.run_ids()) == ids
    assert {r.run_id for r in again.list_runs(limit=100).runs} == ids


def test_add_images_writes_files_and_sorted_names(store):
    run = store.create_run()
    folder = store.run_dir(run.run_id)
    first = store.add_images(run.run_id, [("b.jpg", JPEG), ("a.png", PNG)])
    assert first == ["b.jpg", "a.png"]
    second = store.add_images(run.run_id, [("c.jpg", JPEG), ("a.png", PNG)])
    assert second == ["c.jpg", "a_2.png"]
    assert run_files(folder) == ["images", "metadata.json"]
    assert sorted(os.listdir(folder / "images")) == ["a.png", "a_2.png", "b.jpg", "c.jpg"]
    assert (folder / "images" / "b.jpg").read_bytes() == JPEG
    assert (folder / "images" / "a_2.png").read_bytes() == PNG
    assert store.load(run.run_id).images == ["a.png", "a_2.png", "b.jpg", "c.jpg"]
    assert [p.name for p in store.image_paths(run.run_id)] == ["a.png", "a_2.png", "b.jpg", "c.jpg"]
    assert all(p.parent == folder / "images" for p in store.image_paths(run.run_id))


def test_save_artifact_from_bytes(store):
    run = store.create_run()
    folder = store.run_dir(run.run_id)
    assert not store.artifact_exists(run.run_id, "glb")
    path = store.save_artifact(run.run_id, "glb", b"glTF-one")
    assert path == folder / "scene.glb" == store.artifact_path(run.run_id, "glb")
    assert path.read_bytes() == b"glTF-one"
    store.save_artifact(run.run_id, "glb", b"glTF-two")
    assert path.read_bytes() == b"glTF-two"
    store.save_artifact(run.run_id, "predictions", b"npz")
    assert (folder / "predictions.npz").read_bytes() == b"npz"
    assert store.artifact_exists(run.run_id, "glb")
    assert store.artifact_exists(run.run_id, "predictions")
    assert run_files(folder) == [
        "images",
        "metadata.json",
        "predictions.npz",
        "scene.glb",
    ]


def test_save_artifact_copies_a_file_from_elsewhere(store, tmp_path):
    run = store.create_run()
    source = tmp_path / "download" / "scene.glb"
    source.parent.mkdir()
    source.write_bytes(b"G" * 100_000)
    path = store.save_artifact(run.run_id, "glb", source)
    assert path.read_bytes() == b"G" * 100_000
    assert source.read_bytes() == b"G" * 100_000
    assert run_files(store.run_dir(run.run_id)) == ["images", "metadata.json", "scene.glb"]


def test_save_artifact_moves_a_temp_file_of_the_run(store):
    run = store.create_run()
    temp = temp_sibling(store.artifact_path(run.run_id, "glb"))
    assert temp.parent == store.run_dir(run.run_id)
    assert temp.name != "scene.glb"
    temp.write_bytes(b"streamed")
    assert not store.artifact_exists(run.run_id, "glb")
    path = store.save_artifact(run.run_id, "glb", temp)
    assert path.read_bytes() == b"streamed"
    assert not temp.exists()
    assert run_files(store.run_dir(run.run_id)) == ["images", "metadata.json", "scene.glb"]


def test_save_artifact_refuses_unknown_kind_and_missing_run(store, tmp_path):
    run = store.create_run()
    with pytest.raises(ValueError, match="Unknown artifact kind"):
        store.save_artifact(run.run_id, "video", b"x")  # type: ignore[arg-type]
    before = snapshot(tmp_path)
    with pytest.raises(RunNotFound):
        store.save_artifact(VALID_BUT_ABSENT, "glb", b"x")
    assert snapshot(tmp_path) == before


def test_delete_run_removes_the_folder(store):
    keep, doomed = store.create_run(), store.create_run()
    store.add_images(doomed.run_id, [("a.jpg", JPEG)])
    store.save_artifact(doomed.run_id, "glb", b"glb")
    folder = store.run_dir(doomed.run_id)
    store.delete_run(doomed.run_id)
    assert not folder.exists()
    assert os.listdir(store.runs_dir) == [keep.run_id]
    assert not (store.root / ".locks" / f"{doomed.run_id}.lock").exists()
    assert os.listdir(store.root / ".trash") == []
    with pytest.raises(RunNotFound):
        store.load(doomed.run_id)
    with pytest.raises(RunNotFound):
        store.delete_run(doomed.run_id)
    assert store.load(keep.run_id) == keep


def test_missing_and_damaged_runs(store):
    with pytest.raises(RunNotFound):
        store.load(VALID_BUT_ABSENT)
    run = store.create_run()
    meta = store.run_dir(run.run_id) / "metadata.json"
    other = store.create_run()
    meta.write_bytes((store.run_dir(other.run_id) / "metadata.json").read_bytes())
    with pytest.raises(StorageError, match="names another run"):
        store.load(run.run_id)
    meta.write_text('{"runId": ')
    with pytest.raises(StorageError, match="damaged"):
        store.load(run.run_id)


# --- update ----------------------------------------------------------------------------------


def test_update_writes_the_change_and_returns_it(store):
    run = store.create_run()
    updated = set_status(store, run.run_id, RunStatus.failed, error="boom")
    assert updated.status is RunStatus.failed
    assert store.load(run.run_id).error == "boom"

    def in_place(r: VGGTRun) -> None:
        r.images = ["x.jpg"]

    assert store.update(run.run_id, in_place).images == ["x.jpg"]
    assert store.load(run.run_id).images == ["x.jpg"]


def test_update_that_fails_changes_nothing(store):
    run = store.create_run()
    meta = store.run_dir(run.run_id) / "metadata.json"
    before = meta.read_bytes()

    def explode(r: VGGTRun) -> None:
        r.status = RunStatus.failed
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.update(run.run_id, explode)
    with pytest.raises(ValueError, match="run id"):
        store.update(run.run_id, lambda r: r.model_copy(update={"run_id": VALID_BUT_ABSENT}))
    assert meta.read_bytes() == before
    assert not store.runs_dir.joinpath(VALID_BUT_ABSENT).exists()
    assert run_files(meta.parent) == ["images", "metadata.json"]


def test_update_keeps_unknown_keys(store):
    run = store.create_run()
    meta = store.run_dir(run.run_id) / "metadata.json"
    data = json.loads(meta.read_text())
    data["fromTheFuture"] = {"a": [1, 2]}
    meta.write_text(json.dumps(data))
    set_status(store, run.run_id, RunStatus.cancelled)
    written = json.loads(meta.read_text())
    assert written["fromTheFuture"] == {"a": [1, 2]}
    assert written["status"] == "cancelled"


def test_concurrent_threads_lose_no_update(tmp_path):
    shared = RunStore(tmp_path / "storage")
    run = shared.create_run()
    shared.update(run.run_id, lambda r: setattr(r, "counter", 0))
    threads_n, per_thread = 8, 50
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        # Half the threads share one store, half have their own (like separate app sessions).
        store = shared if index % 2 else RunStore(tmp_path / "storage")
        try:
            barrier.wait(timeout=30)
            for _ in range(per_thread):
                store.update(run.run_id, _increment)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert shared.load(run.run_id).model_extra["counter"] == threads_n * per_thread
    assert run_files(shared.run_dir(run.run_id)) == ["images", "metadata.json"]


def _bump_from_process(root: str, run_id: str, times: int, barrier) -> None:
    store = RunStore(root)
    barrier.wait(timeout=60)
    for _ in range(times):
        store.update(run_id, _increment)


def test_two_processes_lose_no_update(tmp_path):
    store = RunStore(tmp_path / "storage")
    run = store.create_run()
    store.update(run.run_id, lambda r: setattr(r, "counter", 0))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    times = 60
    procs = [
        ctx.Process(target=_bump_from_process, args=(str(store.root), run.run_id, times, barrier))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=60)
        # This process updates too, so three writers contend for the same run.
        for _ in range(times):
            store.update(run.run_id, _increment)
    finally:
        for proc in procs:
            proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.load(run.run_id).model_extra["counter"] == 3 * times


# --- images: all or nothing, and only while queued ---------------------------------------------


@pytest.mark.parametrize(
    ("bad_name", "bad_data", "reason"),
    [
        ("notes.txt", b"plain text", "not an image"),
        ("cut.jpg", JPEG[: len(JPEG) // 2], "truncated"),
        ("empty.jpg", b"", "empty"),
        ("bomb.png", png_claiming(50_000, 50_000), "pixels"),
    ],
)
def test_one_bad_file_stores_nothing(store, bad_name, bad_data, reason):
    run = store.create_run()
    store.add_images(run.run_id, [("already.jpg", JPEG)])
    folder = store.run_dir(run.run_id)
    before = snapshot(folder)
    batch = [("one.jpg", JPEG), (bad_name, bad_data), ("two.png", PNG)]
    with pytest.raises(ImagesRejected) as info:
        store.add_images(run.run_id, batch)
    assert [(p.name, reason in p.reason) for p in info.value.problems] == [(bad_name, True)]
    assert bad_name in str(info.value)
    assert snapshot(folder) == before


def test_too_large_and_too_many_files_are_refused(tmp_path):
    store = RunStore(tmp_path / "storage", max_images=3, max_image_bytes=len(JPEG))
    run = store.create_run()
    store.add_images(run.run_id, [("a.jpg", JPEG), ("b.jpg", JPEG)])
    folder = store.run_dir(run.run_id)
    before = snapshot(folder)
    with pytest.raises(ImagesRejected) as info:
        store.add_images(run.run_id, [("c.jpg", JPEG), ("d.jpg", JPEG)])
    assert "at most 3 images" in str(info.value)
    assert "2 already stored" in str(info.value)
    with pytest.raises(ImagesRejected) as info:
        store.add_images(run.run_id, [("big.png", b"\x00" * (len(JPEG) + 1))])
    assert [p.name for p in info.value.problems] == ["big.png"]
    assert "over the limit" in info.value.problems[0].reason
    assert snapshot(folder) == before
    assert store.add_images(run.run_id, [("c.jpg", JPEG)]) == ["c.jpg"]


def test_small_pixel_limit_refuses_a_real_image(tmp_path):
    store = RunStore(tmp_path / "storage", max_image_pixels=64 * 48 - 1)
    run = store.create_run()
    with pytest.raises(ImagesRejected) as info:
        store.add_images(run.run_id, [("photo.jpg", JPEG)])
    assert "64×48" in info.value.problems[0].reason
    assert os.listdir(store.run_dir(run.run_id) / "images") == []


@pytest.mark.parametrize(
    ("status", "submitted"),
    [
        (RunStatus.queued, True),
        (RunStatus.uploading, False),
        (RunStatus.processing, False),
        (RunStatus.fetching, False),
        (RunStatus.completed, False),
        (RunStatus.failed, False),
        (RunStatus.cancelled, False),
    ],
)
def test_images_refused_once_the_run_is_started(store, status, submitted):
    run = store.create_run()
    store.add_images(run.run_id, [("a.jpg", JPEG)])
    set_status(store, run.run_id, status, submitted_at=utc_now() if submitted else None)
    folder = store.run_dir(run.run_id)
    before = snapshot(folder)
    with pytest.raises(RunBusy):
        store.add_images(run.run_id, [("b.jpg", JPEG)])
    assert snapshot(folder) == before


def test_images_refused_for_a_missing_run(store):
    with pytest.raises(RunNotFound):
        store.add_images(VALID_BUT_ABSENT, [("a.jpg", JPEG)])
    assert not (store.runs_dir / VALID_BUT_ABSENT).exists()


def test_earlier_system_image_names_are_used(store):
    run = store.create_run()
    folder = store.run_dir(run.run_id) / "images"
    names = ["IMG 0001.JPG", "frame.000.jpg", "photo (2).png"]
    for name in names:
        (folder / name).write_bytes(JPEG)
    store.update(run.run_id, lambda r: setattr(r, "images", names))
    assert [p.name for p in store.image_paths(run.run_id)] == sorted(names)


def test_image_paths_ignore_names_that_leave_the_folder(store, tmp_path):
    (tmp_path / "secret.jpg").write_bytes(JPEG)
    run = store.create_run()
    store.add_images(run.run_id, [("ok.jpg", JPEG)])
    hostile = ["../../../secret.jpg", str(tmp_path / "secret.jpg"), "..", "../metadata.json"]
    store.update(run.run_id, lambda r: setattr(r, "images", [*r.images, *hostile]))
    assert [p.name for p in store.image_paths(run.run_id)] == ["ok.jpg"]


# --- invalid run ids -----------------------------------------------------------------------------

INVALID_IDS = [
    "../etc",
    "run_1",
    "",
    "run_1234567890123_ABCDEF",
    "run_1234567890123_abcde\x00",
    "run_1234567890123_abcdef\x00",
    "run_1234567890123_abcdef\n",
    " run_1234567890123_abcdef",
    "/tmp/run_1234567890123_abcdef",
    "/etc",
    "run_1234567890123_abcdef/../../../outside",
    "../run_1234567890123_abcdef",
    "run_12345678901234_abcdef",
    "run_١٧٦١٦٣١٦٢٦٠٧٧_abcdef",  # 13 digits, but not ASCII ones
    "run_1234567890123_abcdéf",
    ".",
    "..",
    None,
    1234567890123,
]


def _methods(store: RunStore, run_id, source: Path) -> dict[str, Callable[[], object]]:
    def hold_lock() -> None:
        with store.lock(run_id):
            pass

    return {
        "run_dir": lambda: store.run_dir(run_id),
        "load": lambda: store.load(run_id),
        "update": lambda: store.update(run_id, lambda r: None),
        "add_images": lambda: store.add_images(run_id, [("a.jpg", JPEG)]),
        "delete_run": lambda: store.delete_run(run_id),
        "delete_run_force": lambda: store.delete_run(run_id, force=True),
        "image_paths": lambda: store.image_paths(run_id),
        "artifact_path": lambda: store.artifact_path(run_id, "glb"),
        "artifact_exists": lambda: store.artifact_exists(run_id, "predictions"),
        "save_artifact_bytes": lambda: store.save_artifact(run_id, "glb", b"glb"),
        "save_artifact_file": lambda: store.save_artifact(run_id, "glb", source),
        "lock": hold_lock,
    }


METHOD_NAMES = list(_methods(None, None, Path()))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_invalid_run_ids_are_refused_by_every_method(tmp_path, method):
    store = RunStore(tmp_path / "storage")
    store.create_run()
    source = tmp_path / "source.glb"
    source.write_bytes(b"glb")
    before = snapshot(tmp_path)
    for run_id in INVALID_IDS:
        with pytest.raises(InvalidRunId):
            _methods(store, run_id, source)[method]()
        assert snapshot(tmp_path) == before, run_id


@pytest.fixture(scope="module")
def id_sandbox(tmp_path_factory):
    top = tmp_path_factory.mktemp("ids")
    store = RunStore(top / "storage")
    store.create_run()
    source = top / "source.glb"
    source.write_bytes(b"glb")
    return top, store, source


def _shaped_like_an_id(value: str) -> bool:
    return (
        len(value) == 24
        and value.startswith("run_")
        and value[17] == "_"
        and all(c in string.digits for c in value[4:17])
        and all(c in string.ascii_lowercase + string.digits for c in value[18:])
    )


_NEAR_IDS = st.builds(
    lambda digits, sep, tail: f"run_{digits}{sep}{tail}",
    st.text(
        st.sampled_from(string.digits) | st.characters(categories=["Nd"]), min_size=12, max_size=14
    ),
    st.sampled_from(["_", "_", "_", "-", "/", "\\", "_/"]),
    st.one_of(
        st.text(st.sampled_from(string.ascii_lowercase + string.digits), min_size=6, max_size=6),
        st.text(st.sampled_from(string.ascii_letters + string.digits + "./\\\x00é_"), max_size=8),
        st.text(max_size=8),
    ),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(run_id=st.one_of(st.text(max_size=60), _NEAR_IDS))
def test_property_arbitrary_run_ids(id_sandbox, run_id):
    top, store, source = id_sandbox
    assert is_valid_run_id(run_id) == _shaped_like_an_id(run_id)
    if _shaped_like_an_id(run_id):
        assert store.run_dir(run_id) == store.runs_dir / run_id
        return
    before = snapshot(top)
    for name, call in _methods(store, run_id, source).items():
        with pytest.raises(InvalidRunId):
            call()
        assert snapshot(top) == before, name


def test_valid_ids_are_accepted_exactly(store):
    assert is_valid_run_id("run_1761631626077_a1b2c3")
    assert is_valid_run_id(store.create_run().run_id)
    assert store.run_dir(VALID_BUT_ABSENT) == store.runs_dir / VALID_BUT_ABSENT


# --- planted symbolic links ---------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.png").write_bytes(PNG)
    (folder / "secret.glb").write_bytes(b"secret glb")
    return folder


def test_linked_metadata_is_never_read_or_written(store, outside):
    run = store.create_run()
    meta = store.run_dir(run.run_id) / "metadata.json"
    target = outside / "metadata.json"
    target.write_bytes(meta.read_bytes())
    meta.unlink()
    meta.symlink_to(target)
    before = snapshot(outside)
    for call in [
        lambda: store.load(run.run_id),
        lambda: store.update(run.run_id, lambda r: setattr(r, "status", RunStatus.failed)),
        lambda: store.add_images(run.run_id, [("a.jpg", JPEG)]),
        lambda: store.image_paths(run.run_id),
        lambda: store.save_artifact(run.run_id, "glb", b"x"),
    ]:
        with pytest.raises(StorageError):
            call()
    page = store.list_runs()
    assert page.runs == []
    assert [b.run_id for b in page.broken] == [run.run_id]
    assert store.counts()["broken"] == 1
    assert store.list_runs(status="queued").total == 0
    assert snapshot(outside) == before


def test_linked_image_is_skipped_and_never_overwritten(store, outside):
    run = store.create_run()
    store.add_images(run.run_id, [("real.jpg", JPEG)])
    images = store.run_dir(run.run_id) / "images"
    (images / "x.png").symlink_to(outside / "secret.png")
    (images / "y.png").symlink_to(outside / "secret.png")
    store.update(run.run_id, lambda r: setattr(r, "images", [*r.images, "x.png"]))
    before = snapshot(outside)
    assert [p.name for p in store.image_paths(run.run_id)] == ["real.jpg"]
    # One name is listed (so a new upload gets another name); one is not (so it is replaced).
    other = png_bytes(seed=9)
    assert store.add_images(run.run_id, [("x.png", other), ("y.png", other)]) == [
        "x_2.png",
        "y.png",
    ]
    assert not (images / "y.png").is_symlink()
    assert (images / "y.png").read_bytes() == other
    assert snapshot(outside) == before
    store.delete_run(run.run_id)
    assert snapshot(outside) == before


def test_linked_artifact_does_not_count_and_is_replaced_not_followed(store, outside):
    run = store.create_run()
    folder = store.run_dir(run.run_id)
    (folder / "scene.glb").symlink_to(outside / "secret.glb")
    (folder / "predictions.npz").symlink_to(outside / "secret.glb")
    before = snapshot(outside)
    assert not store.artifact_exists(run.run_id, "glb")
    assert not store.artifact_exists(run.run_id, "predictions")
    store.save_artifact(run.run_id, "glb", b"mine")
    assert not (folder / "scene.glb").is_symlink()
    assert (folder / "scene.glb").read_bytes() == b"mine"
    assert store.artifact_exists(run.run_id, "glb")
    assert snapshot(outside) == before
    store.delete_run(run.run_id)
    assert snapshot(outside) == before


def test_linked_images_folder_is_never_written_through(store, outside):
    run = store.create_run()
    store.add_images(run.run_id, [("a.jpg", JPEG)])
    images = store.run_dir(run.run_id) / "images"
    for path in images.iterdir():
        path.unlink()
    images.rmdir()
    (outside / "a.jpg").write_bytes(JPEG)
    images.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    assert store.image_paths(run.run_id) == []
    with pytest.raises(StorageError):
        store.add_images(run.run_id, [("b.jpg", JPEG)])
    assert snapshot(outside) == before
    store.delete_run(run.run_id)
    assert snapshot(outside) == before
    assert not store.runs_dir.joinpath(run.run_id).exists()


def test_linked_run_folder_is_not_a_run(store, outside):
    real = store.create_run()
    fake_id = VALID_BUT_ABSENT
    fake = outside / "fake_run"
    (fake / "images").mkdir(parents=True)
    (fake / "metadata.json").write_text(json.dumps(VGGTRun(run_id=fake_id).to_json_dict()))
    (store.runs_dir / fake_id).symlink_to(fake, target_is_directory=True)
    before = snapshot(outside)
    assert store.run_ids() == [real.run_id]
    assert [r.run_id for r in store.list_runs().runs] == [real.run_id]
    assert store.list_runs(query="run_").total == 1
    for call in [
        lambda: store.run_dir(fake_id),
        lambda: store.load(fake_id),
        lambda: store.update(fake_id, lambda r: setattr(r, "status", RunStatus.failed)),
        lambda: store.add_images(fake_id, [("a.jpg", JPEG)]),
        lambda: store.image_paths(fake_id),
        lambda: store.artifact_exists(fake_id, "glb"),
        lambda: store.save_artifact(fake_id, "glb", b"x"),
        lambda: store.delete_run(fake_id, force=True),
    ]:
        with pytest.raises(StorageError):
            call()
    assert snapshot(outside) == before


# --- listing ------------------------------------------------------------------------------------


def test_list_is_newest_first_with_paging_and_total(store):
    ids = make_runs(store, 7)
    newest_first = ids[::-1]
    page = store.list_runs()
    assert [r.run_id for r in page.runs] == newest_first
    assert page.total == 7
    assert page.broken == []
    assert [r.run_id for r in store.list_runs(limit=3).runs] == newest_first[:3]
    assert [r.run_id for r in store.list_runs(limit=3, offset=3).runs] == newest_first[3:6]
    last = store.list_runs(limit=3, offset=6)
    assert [r.run_id for r in last.runs] == newest_first[6:]
    assert last.total == 7
    assert store.list_runs(limit=3, offset=10).runs == []
    assert store.list_runs(limit=0).total == 7


def test_status_filter_single_and_several(store):
    ids = make_runs(store, 5)
    set_status(store, ids[0], RunStatus.completed)
    set_status(store, ids[1], RunStatus.failed, error="x")
    set_status(store, ids[2], RunStatus.completed)
    set_status(store, ids[3], RunStatus.processing)

    def listed(**kwargs) -> list[str]:
        page = store.list_runs(**kwargs)
        assert page.total == len(page.runs)
        return [r.run_id for r in page.runs]

    assert listed(status="completed") == [ids[2], ids[0]]
    assert listed(status=RunStatus.failed) == [ids[1]]
    assert listed(status=["failed", RunStatus.queued]) == [ids[4], ids[1]]
    assert listed(status={"processing", "completed"}) == [ids[3], ids[2], ids[0]]
    assert listed(status=[]) == ids[::-1]
    assert listed(status="cancelled") == []
    page = store.list_runs(status="completed", limit=1, offset=1)
    assert ([r.run_id for r in page.runs], page.total) == ([ids[0]], 2)
    with pytest.raises(ValueError):
        store.list_runs(status="running")


def test_text_search_by_run_id_and_image_name(store):
    ids = make_runs(store, 3)
    store.add_images(ids[0], [("Garden_North.jpg", JPEG)])
    store.add_images(ids[1], [("kitchen.png", PNG), ("garage.jpg", JPEG)])

    def found(query: str) -> list[str]:
        return [r.run_id for r in store.list_runs(query=query).runs]

    assert found("garden") == [ids[0]]
    assert found("GARDEN_n") == [ids[0]]
    assert found(".JPG") == [ids[1], ids[0]]  # a query no random run id can contain
    assert found("KITCHEN.PNG") == [ids[1]]
    assert found(ids[2]) == [ids[2]]
    assert found(ids[2].upper()) == [ids[2]]
    assert found(ids[2][-6:].upper()) == [ids[2]]
    assert found("  ") == ids[::-1]
    assert found("nothing-like-this") == []
    assert store.list_runs(query=".jpg", status="queued").total == 2
    set_status(store, ids[1], RunStatus.completed)
    assert found("garage") == [ids[1]]
    assert [r.run_id for r in store.list_runs(query=".jpg", status="queued").runs] == [ids[0]]


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b'{"runId": "run_', b"null", b"[]", b"\xff\xfe\x00", b'{"status": "running"}'],
)
def test_broken_metadata_is_reported_while_others_list(store, content):
    ids = make_runs(store, 3)
    set_status(store, ids[2], RunStatus.completed)
    (store.run_dir(ids[1]) / "metadata.json").write_bytes(content)
    page = store.list_runs()
    assert [r.run_id for r in page.runs] == [ids[2], ids[0]]
    assert [b.run_id for b in page.broken] == [ids[1]]
    assert page.broken[0].reason
    assert page.total == 3
    counts = store.counts()
    assert counts["broken"] == 1
    assert counts["queued"] == 1
    assert counts["completed"] == 1
    assert sum(counts.values()) == 3
    assert set(counts) == {*(s.value for s in RunStatus), "broken"}
    assert [r.run_id for r in store.list_runs(status="queued").runs] == [ids[0]]
    store.delete_run(ids[1])
    assert store.counts().get("broken", 0) == 0


def test_index_follows_updates_deletes_and_other_stores(tmp_path):
    store = RunStore(tmp_path / "storage")
    ids = make_runs(store, 3)
    assert store.counts()["queued"] == 3
    assert store.list_runs(status="queued").total == 3
    set_status(store, ids[0], RunStatus.processing)
    assert [r.run_id for r in store.list_runs(status="processing").runs] == [ids[0]]
    assert store.counts()["processing"] == 1
    # Another store (another process) changes a run: the first store's next list sees it.
    other = RunStore(tmp_path / "storage")
    set_status(other, ids[1], RunStatus.completed)
    store.add_images(ids[2], [("zebra.jpg", JPEG)])
    assert [r.run_id for r in store.list_runs(status="completed").runs] == [ids[1]]
    assert [r.run_id for r in other.list_runs(query="zebra").runs] == [ids[2]]
    store.delete_run(ids[1])
    assert store.list_runs(status="completed").total == 0
    assert other.list_runs(status="completed").total == 0
    assert store.counts() == {
        **dict.fromkeys((s.value for s in RunStatus), 0),
        "processing": 1,
        "queued": 1,
    }
    # A store started afresh (the app restarted) reads the saved index and is still right.
    assert RunStore(tmp_path / "storage").counts() == store.counts()


def test_index_sees_a_rewrite_that_keeps_mtime_and_size(store):
    """On a file system with coarse timestamps two quick writes share an mtime; the index must
    still notice the second (queued → failed keeps the file's size too)."""
    run = store.create_run()
    meta = store.run_dir(run.run_id) / "metadata.json"
    assert store.list_runs(status="queued").total == 1
    first = os.stat(meta)
    set_status(store, run.run_id, RunStatus.failed)
    assert os.stat(meta).st_size == first.st_size
    os.utime(meta, ns=(first.st_atime_ns, first.st_mtime_ns))
    assert store.list_runs(status="failed").total == 1
    assert store.list_runs(status="queued").total == 0
    assert store.counts()["failed"] == 1
    assert RunStore(store.root).list_runs(status="failed").total == 1


def test_index_file_damaged_or_missing_is_rebuilt(store):
    ids = make_runs(store, 2)
    set_status(store, ids[0], RunStatus.failed)
    assert store.counts()["failed"] == 1
    index = store.root / ".index.sqlite"
    assert index.is_file()
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(b"{not a database" * 100)
    assert RunStore(store.root).counts()["failed"] == 1
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    assert RunStore(store.root).list_runs(status="failed").total == 1


# --- delete -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "submitted"),
    [
        (RunStatus.processing, False),
        (RunStatus.uploading, False),
        (RunStatus.fetching, False),
        (RunStatus.queued, True),
    ],
)
def test_delete_refuses_an_active_run_unless_forced(store, status, submitted):
    run = store.create_run()
    set_status(store, run.run_id, status, submitted_at=utc_now() if submitted else None)
    folder = store.run_dir(run.run_id)
    before = snapshot(folder)
    with pytest.raises(RunBusy):
        store.delete_run(run.run_id)
    assert snapshot(folder) == before
    assert store.list_runs().total == 1
    store.delete_run(run.run_id, force=True)
    assert not folder.exists()
    assert store.list_runs().total == 0


@pytest.mark.parametrize(
    "status", [RunStatus.queued, RunStatus.completed, RunStatus.failed, RunStatus.cancelled]
)
def test_delete_allows_an_idle_run(store, status):
    run = store.create_run()
    set_status(store, run.run_id, status)
    store.delete_run(run.run_id)
    assert not store.runs_dir.joinpath(run.run_id).exists()


def test_delete_removes_a_damaged_run(store):
    run = store.create_run()
    (store.run_dir(run.run_id) / "metadata.json").write_text("garbage")
    store.delete_run(run.run_id)
    assert store.run_ids() == []
    assert store.list_runs().broken == []


def test_sweep_removes_old_leftovers_of_interrupted_creates_and_deletes_only(tmp_path):
    store = RunStore(tmp_path)
    kept = store.create_run()
    trash = tmp_path / ".trash"
    trash.mkdir()
    old_deleted = trash / "run_1700000000000_abcdef.1234"
    (old_deleted / "images").mkdir(parents=True)
    old_create = store.runs_dir / ".tmp-run.0123456789abcdef"
    old_create.mkdir()
    fresh_create = store.runs_dir / ".tmp-run.fedcba9876543210"
    fresh_create.mkdir()
    for path in (old_deleted, old_create):
        os.utime(path, (time.time() - 7200, time.time() - 7200))

    assert store.sweep() == 2
    assert not old_deleted.exists() and not old_create.exists()
    assert fresh_create.exists()  # a create still in progress elsewhere is left alone
    assert store.run_ids() == [kept.run_id]


@pytest.mark.parametrize("take", ["lock", "claim"])
def test_a_lock_taken_as_the_run_is_deleted_does_not_bring_its_folder_back(
    tmp_path, monkeypatch, take
):
    """filelock makes the lock file's folder: a lock or claim racing a delete must not leave an
    empty run folder behind (it read as "metadata.json is missing", an HTTP 500, not 404)."""
    import filelock

    store = RunStore(tmp_path)
    run = store.create_run()
    real_acquire = filelock.FileLock.acquire
    raced = []

    def delete_first(self, *args, **kwargs):
        if not raced:  # the delete lands between the folder check and the lock
            raced.append(True)
            shutil.move(store.run_dir(run.run_id), tmp_path / "elsewhere")
        return real_acquire(self, *args, **kwargs)

    monkeypatch.setattr(filelock.FileLock, "acquire", delete_first)
    with pytest.raises(RunNotFound):
        if take == "lock":
            with store.lock(run.run_id):
                pass
        else:
            store.claim(run.run_id)
    assert not store.run_dir(run.run_id).exists()
    assert store.run_ids() == []
