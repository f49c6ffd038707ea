"""Re-render: new versions of a completed run from the backend or offline, never a lost GLB."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_service import completed, running, service_on, wait_for
from vggt_core import (
    RenderStatus,
    RunBusy,
    RunStatus,
    StudioService,
    VGGTSettings,
    read_glb,
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render(service: StudioService, run_id: str, frame: int | None = None, **settings: object):
    version = service.rerender(run_id, VGGTSettings(**settings), frame=frame)
    return service.wait_render(run_id, version.number, timeout=120)


def test_three_rerenders_are_three_versions_and_the_original_is_untouched(
    tmp_path, local_space, images
):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        first = service.get(run_id).versions
        assert [v.number for v in first] == [1] and first[0].source == "reconstruction"
        scene = service.version_glb(run_id, 1)
        assert scene is not None and scene.name == "scene.glb"
        assert first[0].points == read_glb(scene).point_count
        before = digest(scene)

        cases = [
            {"conf_threshold": 10.0},
            {"conf_threshold": 80.0, "show_cameras": False},
            {"conf_threshold": 50.0, "mask_white_bg": True, "prediction_mode": "pointmap"},
        ]
        for number, settings in enumerate(cases, start=2):
            version = render(service, run_id, **settings)
            assert version.status is RenderStatus.completed, version.error
            assert version.number == number and version.source == "space"
            assert version.settings == VGGTSettings(**settings)
            path = service.version_glb(run_id, number)
            assert path is not None and path.name == f"v{number}.glb"
            glb = read_glb(path)
            assert version.points == glb.point_count > 0
            assert bool(glb.cameras) is VGGTSettings(**settings).show_cameras

        run = service.get(run_id)
        points = {v.number: v.points for v in run.versions}
        assert points[2] > points[1] > points[3]  # a lower threshold keeps more points
        assert digest(scene) == before
        assert service.version_glb(run_id) == service.version_glb(run_id, 4)  # newest by default
        on_disk = json.loads((tmp_path / "runs" / run_id / "metadata.json").read_text())
        assert [v["number"] for v in on_disk["versions"]] == [1, 2, 3, 4]
        assert on_disk["versions"][2]["settings"]["confThreshold"] == 80.0


def test_a_forgotten_run_says_so_and_reruns_linked_to_its_parent(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        with local_space.override(forget=True):
            version = render(service, run_id, conf_threshold=20.0)
        assert version.status is RenderStatus.failed and version.error_kind == "forgotten"
        assert "no longer holds" in (version.error or "")
        assert service.version_glb(run_id, version.number) is None
        assert not (tmp_path / "runs" / run_id / "versions" / f"v{version.number}.glb").exists()

        child = service.rerun(run_id, VGGTSettings(conf_threshold=20.0))
        assert child.parent_run_id == run_id
        done = service.wait(child.run_id, timeout=120)
        assert done.status is RunStatus.completed, done.error
        assert done.settings.conf_threshold == 20.0
        copied = [p.read_bytes() for p in service.image_paths(child.run_id)]
        assert copied == [p.read_bytes() for p in service.image_paths(run_id)]


def test_one_frame_renders_in_the_session_that_reconstructed(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        all_frames = service.get(run_id).versions[0].points
        version = render(service, run_id, frame=1)
        assert version.status is RenderStatus.completed, version.error
        assert 0 < (version.points or 0) < (all_frames or 0)
        sent = [r for r in local_space.received if r["endpoint"] == "/update_visualization"]
        assert sent[-1]["params"]["frame_filter"].startswith("1: ")


def test_one_frame_after_a_restart_resumes_the_session_that_reconstructed(
    tmp_path, local_space, images
):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
    with running(service_on(tmp_path, local_space.url)) as restarted:
        version = render(restarted, run_id, frame=0)
        assert version.status is RenderStatus.completed, version.error
        sent = [r for r in local_space.received if r["endpoint"] == "/update_visualization"][-1]
        assert sent["session_hash"] == restarted.get(run_id).remote.session_hash


def test_one_frame_in_a_session_the_backend_dropped_says_why(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)

        def forget_session(run):
            run.remote.session_hash = "0" * 32  # as after the Space dropped the session

        service.store.update(run_id, forget_session)
        version = render(service, run_id, frame=1)
        assert version.status is RenderStatus.failed and version.error_kind == "frame_filter"
        assert "dropped" in (version.error or "")
        assert "not in the list" not in version.error and "Value:" not in version.error


def test_one_frame_without_that_session_says_why_and_sends_nothing(tmp_path, local_space, images):
    # VGGT_SESSION_KEEP_S=0: as if the run finished long ago (its session is gone).
    with running(service_on(tmp_path, local_space.url, VGGT_SESSION_KEEP_S=0)) as service:
        run_id = completed(service, images)
        calls = len(local_space.received)
        version = render(service, run_id, frame=2)
        assert version.status is RenderStatus.failed and version.error_kind == "frame_filter"
        assert "session" in (version.error or "") and "not in the list" not in version.error
        renders = [r for r in local_space.received[calls:] if "visualization" in r["endpoint"]]
        assert renders == []
        assert render(service, run_id).status is RenderStatus.completed  # all frames still work


def test_local_refilter_equals_the_backend(tmp_path, npz_space, images):
    with running(service_on(tmp_path, npz_space.url)) as service:
        run_id = completed(service, images)
        assert service.get(run_id).artifacts.predictions == "predictions.npz"
        target_dir = service.get(run_id).remote.target_dir
        cases = [
            {"conf_threshold": 30.0},
            {"conf_threshold": 70.0, "mask_black_bg": True, "mask_white_bg": True},
            {"conf_threshold": 0.0, "prediction_mode": "pointmap", "show_cameras": False},
        ]
        for settings in cases:
            calls = len(npz_space.received)
            version = render(service, run_id, **settings)
            assert version.status is RenderStatus.completed and version.source == "local"
            assert not [r for r in npz_space.received[calls:] if "visual" in r["endpoint"]]
            ours = read_glb(service.version_glb(run_id, version.number))
            theirs_path = tmp_path / f"theirs_{version.number}.glb"
            with service.space.session() as session:
                result = session.render(target_dir, VGGTSettings(**settings))
                session.download(result.glb, theirs_path)
            theirs = read_glb(theirs_path)
            assert ours.point_count == theirs.point_count == version.points
            np.testing.assert_array_equal(ours.points, theirs.points)
            np.testing.assert_array_equal(ours.colors, theirs.colors)
            assert len(ours.cameras) == len(theirs.cameras)


def test_mask_sky_on_a_run_with_predictions_goes_to_the_backend(tmp_path, npz_space, images):
    with running(service_on(tmp_path, npz_space.url)) as service:
        run_id = completed(service, images)
        version = render(service, run_id, mask_sky=True)
        assert version.status is RenderStatus.completed and version.source == "space"


def test_refused_rerenders_change_nothing(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        metadata = tmp_path / "runs" / run_id / "metadata.json"
        before = metadata.read_bytes()
        with pytest.raises(RunBusy, match="out of range"):
            service.rerender(run_id, VGGTSettings(), frame=3)
        waiting = service.create_run()
        with pytest.raises(RunBusy, match="only a completed run"):
            service.rerender(waiting.run_id, VGGTSettings())
        assert metadata.read_bytes() == before


def test_a_render_whose_process_died_reads_interrupted(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    metadata = tmp_path / "runs" / run_id / "metadata.json"
    data = json.loads(metadata.read_text())
    data["versions"].append(
        {"number": 2, "status": "rendering", "settings": data["settings"], "ownerPid": pid}
    )
    metadata.write_text(json.dumps(data))
    with running(service_on(tmp_path, local_space.url)) as service:
        version = service.get(run_id).version(2)
        assert version is not None and version.status is RenderStatus.failed
        assert "Interrupted" in (version.error or "")
        again = render(service, run_id, conf_threshold=60.0)  # it no longer blocks a new one
        assert again.number == 3 and again.status is RenderStatus.completed
    assert os.getpid() != pid


def test_an_older_completed_run_reads_as_version_one(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        run_id = completed(service, images)
        metadata = tmp_path / "runs" / run_id / "metadata.json"
        data = json.loads(metadata.read_text())
        del data["versions"]  # as the earlier system wrote it
        metadata.write_text(json.dumps(data))
        run = service.get(run_id)
        assert [v.number for v in run.all_versions] == [1]
        assert service.version_glb(run_id) == tmp_path / "runs" / run_id / "scene.glb"
        version = render(service, run_id, conf_threshold=20.0)
        assert version.number == 2 and version.status is RenderStatus.completed
        assert [v.number for v in service.get(run_id).versions] == [1, 2]


def test_cancel_a_rendering_and_a_waiting_re_render(tmp_path, local_space, images):
    with running(service_on(tmp_path, local_space.url)) as service:
        first = completed(service, images)
        second = completed(service, images)
        with local_space.override(render_delay=10.0):
            slow = service.rerender(first, VGGTSettings(conf_threshold=15.0))
            waiting = service.rerender(second, VGGTSettings(conf_threshold=15.0))
            wait_for(
                lambda: service.get(first).version(slow.number).status is RenderStatus.rendering,
                what="the first re-render to start",
            )
            assert service.get(second).version(waiting.number).status is RenderStatus.queued
            ended = service.cancel_render(second).version(waiting.number)
            assert ended.status is RenderStatus.cancelled  # at once: nobody had started it
            service.cancel_render(first)
            done = service.wait_render(first, slow.number, timeout=20)
        assert done.status is RenderStatus.cancelled and done.glb is None
        assert not (tmp_path / "runs" / first / "versions" / f"v{slow.number}.glb").exists()
        assert service.get(second).render is None
        assert render(service, first, conf_threshold=25.0).status is RenderStatus.completed


def test_closing_the_app_mid_render_ends_it_interrupted(tmp_path, local_space, images):
    service = service_on(tmp_path, local_space.url)
    try:
        run_id = completed(service, images)
        with local_space.override(render_delay=10.0):
            version = service.rerender(run_id, VGGTSettings(conf_threshold=15.0))
            wait_for(
                lambda: (
                    service.get(run_id).version(version.number).status is RenderStatus.rendering
                ),
                what="the re-render to start",
            )
            service.close(timeout=20)
    finally:
        service.close()
    ended = service.get(run_id).version(version.number)
    assert ended.status is RenderStatus.failed and "Interrupted" in (ended.error or "")


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_hostile_or_incomplete_predictions_file_is_refused_in_words(tmp_path, npz_space, images):
    with running(service_on(tmp_path, npz_space.url)) as service:
        run_id = completed(service, images)
        npz = tmp_path / "runs" / run_id / "predictions.npz"
        good = dict(np.load(npz))
        np.savez(npz, **{**good, "depth_conf": np.array([_Boom()], dtype=object)})
        version = render(service, run_id, conf_threshold=40.0)
        assert version.status is RenderStatus.failed and version.error_kind == "storage"
        assert "could not be built" in (version.error or "")
        assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()

        del good["world_points_from_depth"]
        np.savez(npz, **good)
        version = render(service, run_id, conf_threshold=40.0)
        assert version.status is RenderStatus.failed
        assert "predictions.npz lacks world_points_from_depth" in (version.error or "")
        assert service.version_glb(run_id) == tmp_path / "runs" / run_id / "scene.glb"
