"""The Reconstruct click: one decode per photo, no fsync but the run folder's rename."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from helpers_service import running, service_on, wait_for
from PIL import Image, ImageFile

from vggt_core import ImagesRejected, RunBusy, RunStatus, StudioService, VGGTSettings, load_config


def jpeg(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    image = Image.effect_noise(size, 40 + seed).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def service_without_workers(root: Any) -> StudioService:
    # No workers: nothing in the background fsyncs or decodes while the click is measured.
    config = load_config({"VGGT_STORAGE_DIR": str(root), "VGGT_BACKEND": "http://127.0.0.1:9"})
    return StudioService(config, workers=False)


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Any]:
    """Record every call of owner.name (still calling it) from now on."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_reconstruct_fsyncs_only_the_run_folders_rename(tmp_path, monkeypatch):
    service = service_without_workers(tmp_path)
    files = [(f"IMG_{i}.jpg", jpeg(i)) for i in range(3)]
    synced = counting(monkeypatch, os, "fsync")
    try:
        run = service.submit(VGGTSettings(), files)
    finally:
        service.close()
    assert len(synced) == 1, f"{len(synced)} fsyncs on the click"
    stored = service.get(run.run_id)
    assert stored.status is RunStatus.queued and stored.submitted_at is not None
    assert stored.attempt == 1
    assert [p.read_bytes() for p in service.image_paths(run.run_id)] == [d for _, d in files]


def test_a_photo_the_page_checked_is_not_decoded_again_on_reconstruct(tmp_path, monkeypatch):
    service = service_without_workers(tmp_path)
    files = [(f"IMG_{i}.jpg", jpeg(10 + i)) for i in range(3)]
    for name, data in files:
        service.check_image(name, data)  # as the New run page does when the files arrive
    loads = counting(monkeypatch, ImageFile.ImageFile, "load")
    try:
        run = service.submit(VGGTSettings(), files)
    finally:
        service.close()
    assert loads == []
    assert len(service.get(run.run_id).images) == 3


def test_an_unchecked_damaged_photo_is_still_refused_and_nothing_stored(tmp_path):
    service = service_without_workers(tmp_path)
    good = jpeg(20)
    service.check_image("good.jpg", good)
    cut = jpeg(21)[:-2000]
    try:
        with pytest.raises(ImagesRejected) as refused:
            service.submit(VGGTSettings(), [("good.jpg", good), ("cut.jpg", cut)])
        with pytest.raises(RunBusy, match="no images"):
            service.submit(VGGTSettings(), [])
        assert service.list_runs().total == 0
    finally:
        service.close()
    assert [p.name for p in refused.value.problems] == ["cut.jpg"]
    assert "truncated" in refused.value.problems[0].reason


def test_active_runs_sees_a_draft_started_by_another_process(tmp_path):
    service = service_without_workers(tmp_path)
    other = service_without_workers(tmp_path)  # another process's service on the same storage
    try:
        drafts = []
        for i in range(4):
            draft = service.create_run()
            service.add_images(draft.run_id, [("a.jpg", jpeg(30 + i))])
            drafts.append(draft.run_id)
        started = service.submit(VGGTSettings(), [("b.jpg", jpeg(40))])
        assert [r.run_id for r in service.active_runs()] == [started.run_id]
        assert [r.run_id for r in service.active_runs()] == [started.run_id]  # drafts remembered
        other.start(drafts[1])
        assert [r.run_id for r in service.active_runs()] == [started.run_id, drafts[1]]
        other.delete(drafts[2], force=True)
        assert len(service.active_runs()) == 2
    finally:
        other.close()
        service.close()


def test_drafts_are_never_read_to_find_the_runs_in_flight(tmp_path, monkeypatch):
    # An API client's drafts can be thousands; every New run render and every periodic sweep
    # asks for the runs in flight, and neither may open a draft's metadata to answer.
    service = service_without_workers(tmp_path)
    try:
        drafts = [service.create_run().run_id for _ in range(5)]
        started = service.submit(VGGTSettings(), [("b.jpg", jpeg(40))])
        fresh = service_without_workers(tmp_path)  # a restart: nothing remembered
        try:
            loads = counting(monkeypatch, fresh.store, "load")
            assert [r.run_id for r in fresh.active_runs()] == [started.run_id]
            assert fresh.recover() == []  # no workers here: only what a dead worker left
            assert {args[0] for args in loads} <= {started.run_id}
            # Drafts are still queued runs to everything else.
            assert fresh.counts()["queued"] == 6
            listed = fresh.list_runs(status=RunStatus.queued).runs
            assert {r.run_id for r in listed} == {*drafts, started.run_id}
            with running(service_on(tmp_path, "http://127.0.0.1:9")) as sweeping:
                loads = counting(monkeypatch, sweeping.store, "load")
                sweeping.recover()  # a worker takes the started run (and fails it: no backend)
                wait_for(lambda: not sweeping.store.load(started.run_id).is_active)
                assert {args[0] for args in loads} <= {started.run_id}
        finally:
            fresh.close()
    finally:
        service.close()
