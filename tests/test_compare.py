"""Comparing runs in the core: references, what differs, refusals."""

from __future__ import annotations

import pytest

from tests.helpers_service import running, service_on
from vggt_core import InvalidRunId, RunNotFound, RunStatus, VGGTSettings
from vggt_core.compare import parse_ref
from vggt_core.local_space import write_sample_images


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run_1700000000000_abc123", ("run_1700000000000_abc123", None)),
        ("run_1700000000000_abc123@2", ("run_1700000000000_abc123", 2)),
        (" run_1700000000000_abc123@v12 ", ("run_1700000000000_abc123", 12)),
    ],
)
def test_references_name_a_run_and_maybe_a_version(text, expected):
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["", "run_1", "../run_1700000000000_abc123", "run_1700000000000_abc123@0", "x@1"]
)
def test_other_references_are_refused_in_words(text):
    with pytest.raises(InvalidRunId, match="not a run to compare"):
        parse_ref(text)


def test_differences_are_named_and_missing_versions_refused(tmp_path, local_space):
    files = [(p.name, p.read_bytes()) for p in write_sample_images(tmp_path / "i", count=2)]
    with running(service_on(tmp_path / "s", local_space.url)) as service:
        ids = []
        for settings in (VGGTSettings(), VGGTSettings(mask_black_bg=True)):
            run = service.wait(service.submit(settings, files).run_id, timeout=120)
            assert run.status is RunStatus.completed, run.error
            ids.append(run.run_id)
        found = service.compare(ids)
        assert [i.version for i in found.items] == [1, 1]
        assert "mask_black_bg" in found.differs and "conf_threshold" not in found.differs
        assert found.items[0].points and found.items[0].cameras == 2
        with pytest.raises(RunNotFound, match="no version 2"):
            service.compare([ids[0], f"{ids[1]}@2"])
        with pytest.raises(InvalidRunId, match="at most 6"):
            service.compare([ids[0]] * 7)


def test_pose_difference_measures_a_turned_and_moved_camera(tmp_path):
    import numpy as np

    from vggt_core.compare import pose_difference, poses_of
    from vggt_core.glb import predictions_to_glb, rot_y
    from vggt_core.local_space import (
        load_and_preprocess_images,
        run_stand_in_model,
        write_sample_images,
    )

    paths = write_sample_images(tmp_path / "i", count=4)
    predictions = run_stand_in_model(load_and_preprocess_images(paths))
    turned = {k: v.copy() for k, v in predictions.items()}
    # Camera 2 turned 5° about y and its centre moved; the rest, and camera 0, untouched.
    turned["extrinsic"][2, :, :3] = (rot_y(5.0) @ predictions["extrinsic"][2, :, :3]).astype(
        np.float32
    )
    for name, preds in (("a", predictions), ("b", turned)):
        predictions_to_glb(preds, conf_thres=50.0).export(tmp_path / f"{name}.glb")
    same = pose_difference(poses_of(tmp_path / "a.glb"), poses_of(tmp_path / "a.glb"), ("a", "a"))
    assert same.rotation_deg_max < 1e-3 and same.translation_max < 1e-6
    moved = pose_difference(poses_of(tmp_path / "a.glb"), poses_of(tmp_path / "b.glb"), ("a", "b"))
    assert moved.cameras == 4
    assert abs(moved.rotation_deg_max - 5.0) < 0.01 and moved.rotation_deg_median < 0.01
    assert moved.translation_max > 0.001


def test_runs_compare_their_cameras_or_say_why_not(tmp_path, local_space):
    files = [(p.name, p.read_bytes()) for p in write_sample_images(tmp_path / "i", count=3)]
    with running(service_on(tmp_path / "s", local_space.url)) as service:
        ids = []
        for settings in (VGGTSettings(), VGGTSettings(prediction_mode="pointmap")):
            ids.append(service.wait(service.submit(settings, files).run_id, timeout=120).run_id)
        blind = service.wait(
            service.submit(VGGTSettings(show_cameras=False), files).run_id, timeout=120
        ).run_id
        found = service.compare([*ids, blind])
        assert len(found.poses) == 1, found.pose_notes
        [pose] = found.poses
        assert pose.cameras == 3 and pose.rotation_deg_max < 1e-3  # the same cameras
        assert len(found.pose_notes) == 1 and "no camera cones" in found.pose_notes[0]
