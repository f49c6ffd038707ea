"""The derived run index: shared by processes, incremental disk usage, hand edits, crashes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_images import jpeg_bytes

from vggt_core import run_index
from vggt_core.errors import InvalidRunId
from vggt_core.models import RunStatus
from vggt_core.storage import RunStore

JPEG = jpeg_bytes()
ROOT = Path(__file__).resolve().parents[1]


def walked_bytes(runs_dir: Path) -> int:
    """Every file of every run folder, walked (an interrupted create's `.tmp-` folder is no run)."""
    return sum(
        os.lstat(os.path.join(d, f)).st_size
        for run in runs_dir.glob("run_*")
        for d, _dirs, files in os.walk(run)
        for f in files
    )


def truth(store: RunStore) -> dict[str, int]:
    """Runs per status as the metadata files say (the source of truth)."""
    counts = dict.fromkeys((s.value for s in RunStatus), 0)
    for folder in store.runs_dir.iterdir():
        if folder.name.startswith("run_"):
            counts[store.load(folder.name).status.value] += 1
    return counts


def python(code: str) -> subprocess.Popen[bytes]:
    """Another process using the same storage, as the CLI or a worker does."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_another_process_s_create_and_status_change_show_at_once(tmp_path):
    store = RunStore(tmp_path / "storage")
    first = store.create_run()
    assert store.counts()["queued"] == 1
    proc = python(
        "from vggt_core.storage import RunStore\n"
        "from vggt_core.models import RunStatus\n"
        f"s = RunStore({str(store.root)!r})\n"
        "r = s.create_run()\n"
        f"s.update({first.run_id!r}, lambda run: setattr(run, 'status', RunStatus.failed))\n"
        "s.add_images(r.run_id, [('zebra.jpg', open(" + repr(str(tmp_path / "z.jpg")) + ", "
        "'rb').read())])\n"
    )
    (tmp_path / "z.jpg").write_bytes(JPEG)
    assert proc.wait(timeout=120) == 0
    assert store.counts() == truth(store)
    assert store.counts()["failed"] == 1
    assert store.list_runs(query="ZEBRA").total == 1
    assert store.run_count() == 2 == len(store.run_ids())
    assert store.disk_usage() == walked_bytes(store.runs_dir)


def test_disk_usage_follows_every_change_without_a_walk(tmp_path):
    store = RunStore(tmp_path / "storage")
    run = store.create_run(images=[("a.jpg", JPEG)])
    assert store.disk_usage() == walked_bytes(store.runs_dir)
    store.add_images(run.run_id, [("b.jpg", JPEG), ("c.jpg", JPEG)])
    assert store.disk_usage() == walked_bytes(store.runs_dir)
    store.save_artifact(run.run_id, "glb", b"g" * 5000)
    assert store.disk_usage() == walked_bytes(store.runs_dir)
    # A file written into the run by someone else (a re-render's new GLB version) counts once
    # they call the hook, whatever else changed.
    versions = store.run_dir(run.run_id) / "versions" / "v2"
    versions.mkdir(parents=True)
    (versions / "scene.glb").write_bytes(b"v" * 70_000)
    store.files_changed(run.run_id)
    assert store.disk_usage() == walked_bytes(store.runs_dir)
    # An artifact removed straight from the folder (as the runner does on failure) is seen.
    store.artifact_path(run.run_id, "glb").unlink()
    assert store.disk_usage() == walked_bytes(store.runs_dir)
    other = store.create_run(images=[("x.jpg", JPEG)])
    store.delete_run(run.run_id)
    assert store.disk_usage() == walked_bytes(store.runs_dir)
    # A restarted app reads the stored figures, and they are still right.
    assert RunStore(store.root).disk_usage() == walked_bytes(store.runs_dir)
    store.delete_run(other.run_id)
    assert store.disk_usage() == 0


def test_files_changed_refuses_what_is_not_a_run_id(store_root: Path):
    store = RunStore(store_root)
    for bad in ("../x", "run_1", "/etc"):
        with pytest.raises(InvalidRunId):
            store.files_changed(bad)


@pytest.fixture
def store_root(tmp_path) -> Path:
    return tmp_path / "storage"


def test_runs_copied_in_or_removed_by_hand_are_seen(tmp_path):
    store = RunStore(tmp_path / "storage")
    kept = store.create_run()
    gone = store.create_run()
    assert store.run_count() == 2
    elsewhere = RunStore(tmp_path / "other")
    brought = elsewhere.create_run(images=[("kitchen.jpg", JPEG)])
    shutil.copytree(elsewhere.run_dir(brought.run_id), store.runs_dir / brought.run_id)
    shutil.rmtree(store.run_dir(gone.run_id))
    assert sorted(store.run_ids()) == sorted([kept.run_id, brought.run_id])
    assert [r.run_id for r in store.list_runs(query="kitchen").runs] == [brought.run_id]
    assert store.disk_usage() == walked_bytes(store.runs_dir)


def test_a_hand_edit_in_a_big_store_shows_within_the_recheck_rounds(tmp_path, monkeypatch):
    """Past RECHECK_BATCH runs each round re-checks a slice; files_changed shows an edit at once."""
    monkeypatch.setattr(run_index, "RECHECK_BATCH", 3)
    monkeypatch.setattr(run_index, "RECHECK_S", 0.0)
    store = RunStore(tmp_path / "storage")
    ids = [store.create_run().run_id for _ in range(10)]
    assert store.counts()["queued"] == 10
    for victim in (ids[0], ids[5]):
        meta = store.run_dir(victim) / "metadata.json"
        meta.write_bytes(meta.read_bytes().replace(b'"queued"', b'"cancelled"'))
    calls = 0
    while store.counts()["cancelled"] < 2:
        calls += 1
        assert calls <= 10 // 3 + 1, "a hand edit was not seen within size / batch calls"
    # The hook shows an edit at once, wherever the slice is.
    meta = store.run_dir(ids[3]) / "metadata.json"
    meta.write_bytes(meta.read_bytes().replace(b'"queued"', b'"failed"'))
    store.files_changed(ids[3])
    assert store.counts()["failed"] == 1
    assert store.counts() == truth(store)


def test_a_writer_killed_mid_updates_leaves_an_index_that_matches_the_files(tmp_path):
    store = RunStore(tmp_path / "storage")
    ids = [store.create_run().run_id for _ in range(20)]
    ready = tmp_path / "ready"
    proc = python(
        "import itertools, pathlib\n"
        "from vggt_core.storage import RunStore\n"
        "from vggt_core.models import RunStatus\n"
        f"s = RunStore({str(store.root)!r})\n"
        f"ids = {ids!r}\n"
        "states = [RunStatus.processing, RunStatus.completed, RunStatus.failed]\n"
        "for k in itertools.count():\n"
        "    s.update(ids[k % len(ids)], lambda r: setattr(r, 'status', states[k % 3]))\n"
        f"    if k == 50: pathlib.Path({str(ready)!r}).touch()\n"
        "    if k % 7 == 0: s.create_run()\n"
    )
    try:
        wait_for(ready.exists)
        assert sum(store.counts().values()) >= 20  # reading while the other process writes
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    fresh = RunStore(store.root)
    assert fresh.counts() == truth(fresh)
    assert store.counts() == truth(store)
    assert fresh.run_count() == len(list(store.runs_dir.glob("run_*")))
    assert fresh.disk_usage() == walked_bytes(store.runs_dir)


def test_a_storage_of_the_earlier_version_is_indexed_and_its_old_cache_removed(tmp_path):
    store = RunStore(tmp_path / "storage")
    run = store.create_run()
    store.update(run.run_id, lambda r: setattr(r, "status", RunStatus.completed))
    for name in (".index.sqlite", ".index.sqlite-wal", ".index.sqlite-shm"):
        (store.root / name).unlink(missing_ok=True)
    (store.root / ".index.json").write_text('{"' + run.run_id + '": [1, 2, "queued", []]}')
    (store.root / ".changes").write_bytes(b"x")
    upgraded = RunStore(store.root)
    assert upgraded.counts()["completed"] == 1
    assert not (store.root / ".index.json").exists()
    assert not (store.root / ".changes").exists()
