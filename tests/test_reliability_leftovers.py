"""Kills, races and bad writes leave nothing behind: no stray staging, temp files, locks or runs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vggt_core import (
    RunStatus,
    RunStore,
    StorageError,
    StudioService,
    VGGTSettings,
    load_config,
)
from vggt_core.local_space import LocalSpace, StandInOptions, write_sample_images

ROOT = Path(__file__).resolve().parents[1]
TRIES = int(os.environ.get("VGGT_RACE_TRIES", "1000"))

SUBMITTER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vggt_core import StudioService, VGGTSettings, load_config
    service = StudioService(load_config(), sweep_interval_s=0.2)
    images = [(p.name, p.read_bytes()) for p in sorted(Path(sys.argv[1]).iterdir())]
    print("ready", flush=True)
    while True:
        run = service.submit(VGGTSettings(), images)
        service.wait(run.run_id, timeout=60)
    """
)


@pytest.mark.slow
def test_fifty_kills_leave_no_leftovers(tmp_path):
    rng = random.Random(5)
    storage, private_tmp = tmp_path / "storage", tmp_path / "tmp"
    private_tmp.mkdir()
    images = write_sample_images(tmp_path / "images", count=3)
    with LocalSpace(StandInOptions(delay=0.05, concurrency_limit=8)) as space:
        env = {
            **os.environ,
            "VGGT_BACKEND": space.url,
            "VGGT_STORAGE_DIR": str(storage),
            "TMPDIR": str(private_tmp),
        }
        for _ in range(50):
            child = subprocess.Popen(
                [sys.executable, "-c", SUBMITTER, str(images[0].parent)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.5))  # where the kill lands, not a wait for anything
            child.send_signal(signal.SIGKILL)
            child.wait()
        service = StudioService(load_config({"VGGT_STORAGE_DIR": str(storage)}), workers=False)
        service.recover()
    store = service.store
    assert list((storage / ".staging").iterdir()) == []
    assert list(store.runs_dir.glob(".tmp-*")) == []
    assert not (storage / ".locks").exists()
    assert [p for p in private_tmp.rglob("*") if "vggt" in p.name] == []
    run_ids = store.run_ids()
    assert len(run_ids) >= 10, "the kills never let a run be created"
    for run_id in run_ids:
        run = store.load(run_id)
        assert run.images, f"{run_id} has no images"
        folder = store.run_dir(run_id)
        assert sorted(p.name for p in (folder / "images").iterdir()) == run.images
        strays = [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
        assert strays == [], (run_id, strays)
        assert not run.is_active or run.status is RunStatus.queued


def test_settings_that_skipped_validation_are_refused_before_writing(tmp_path):
    store = RunStore(tmp_path)
    bad = VGGTSettings().model_copy(update={"conf_threshold": 1000})
    with pytest.raises(StorageError, match="Confidence threshold must be between 0 and 100"):
        store.create_run(bad)
    assert store.run_ids() == []
    run = store.create_run()
    with pytest.raises(StorageError, match="was not saved"):
        store.update(run.run_id, lambda r: setattr(r, "settings", bad))
    assert store.load(run.run_id).settings.conf_threshold == 50


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_thousand_instant_retries_never_leave_a_run_waiting_without_a_worker(tmp_path):
    # A backend that refuses at once: every attempt fails within milliseconds, and the retry
    # lands the instant it does, while a second service keeps probing the claims (its sweep).
    config = load_config({"VGGT_BACKEND": "http://127.0.0.1:9", "VGGT_STORAGE_DIR": str(tmp_path)})
    images = [(p.name, p.read_bytes()) for p in write_sample_images(tmp_path / "i", count=1)]
    worker = StudioService(config, sweep_interval_s=0.05)
    prober = StudioService(config, sweep_interval_s=0.05)
    try:
        for attempt in range(TRIES):
            run = worker.submit(VGGTSettings(), images)
            done = worker.wait(run.run_id, timeout=60, poll_s=0.002)
            assert done.status is RunStatus.failed, (attempt, done.status)
            worker.retry(run.run_id)  # the instant it failed
            final = worker.wait(run.run_id, timeout=60, poll_s=0.002)
            assert final.status is RunStatus.failed, (attempt, final.status)
            assert [a.number for a in final.attempts] == [1] and final.attempt == 2
    finally:
        worker.close()
        prober.close()
