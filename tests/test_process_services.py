"""Who runs a storage's waiting runs (the heartbeat files) and the process's one service per
storage folder (shared by the pages and the REST API)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.helpers_service import wait_for
from vggt_core import StudioService, load_config
from vggt_core.heartbeat import STALE_AFTER_S, Heartbeat, live_workers
from vggt_core.shared import ServiceRegistry


def config(root: Path, **more: str):
    return load_config(
        {"VGGT_BACKEND": "http://127.0.0.1:9", "VGGT_STORAGE_DIR": str(root), **more}
    )


def test_a_heartbeat_is_seen_while_it_beats_and_gone_when_it_stops(tmp_path):
    beat = Heartbeat(tmp_path, interval_s=0.05)
    beat.start()
    try:
        assert [w.pid for w in live_workers(tmp_path)] == [os.getpid()]
        first = beat.path.stat().st_mtime_ns
        wait_for(lambda: beat.path.stat().st_mtime_ns > first, what="the next beat")
    finally:
        beat.stop()
    assert not beat.path.exists()
    assert live_workers(tmp_path) == []


def test_stale_and_foreign_files_are_not_workers_and_stale_ones_are_cleared(tmp_path):
    folder = tmp_path / ".workers"
    folder.mkdir()
    stale = folder / "4242.dead.alive"
    stale.touch()
    old = time.time() - STALE_AFTER_S - 5
    os.utime(stale, (old, old))
    (folder / "notapid.x.alive").touch()
    (folder / "4243.txt").touch()
    (folder / "4244.dir.alive").mkdir()
    (folder / "4245.link.alive").symlink_to(folder / "4243.txt")
    fresh = folder / "4246.live.alive"
    fresh.touch()
    assert [w.pid for w in live_workers(tmp_path)] == [4246]
    assert not stale.exists()
    assert live_workers(tmp_path / "no-such-storage") == []


def test_only_a_service_that_sweeps_says_it_runs_the_storage(tmp_path):
    sweeping = StudioService(config(tmp_path))
    try:
        assert [w.pid for w in sweeping.live_workers()] == [os.getpid()]
        for quiet in (
            StudioService(config(tmp_path), workers=False),
            StudioService(config(tmp_path), sweep_interval_s=None),
        ):
            assert len(quiet.live_workers()) == 1  # still only the sweeping one
            quiet.close()
    finally:
        sweeping.close()
    assert sweeping.live_workers() == []


def test_the_registry_keeps_one_service_per_storage_and_replaces_it_when_settings_change(tmp_path):
    registry = ServiceRegistry()
    try:
        first = registry.get(config(tmp_path / "a"))
        assert registry.get(config(tmp_path / "a")) is first
        other = registry.get(config(tmp_path / "b"))
        assert other is not first
        changed = registry.get(config(tmp_path / "a", VGGT_MAX_CONCURRENT_RUNS="3"))
        assert changed is not first
        # The replaced one takes no more runs: its heartbeat is gone, the new one's is there.
        assert [w.pid for w in live_workers(tmp_path / "a")] == [os.getpid()]
        token = registry.get(
            config(tmp_path / "a", VGGT_MAX_CONCURRENT_RUNS="3", VGGT_API_TOKEN="x" * 20)
        )
        assert token is not changed  # a new API token is a new configuration too
    finally:
        registry.close()
    assert live_workers(tmp_path / "a") == [] and live_workers(tmp_path / "b") == []
