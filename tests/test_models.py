"""The run models: settings defaults and validation, camelCase JSON, timestamps, old files."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from vggt_core.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Artifacts,
    RemoteJob,
    RunProgress,
    RunStatus,
    UploadStats,
    VGGTRun,
    VGGTSettings,
    describe_validation_error,
    utc_now,
)
from vggt_core.storage import RunStore

ISO_MS_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
RUN_ID = "run_1761631626077_a1b2c3"

# A metadata.json exactly as the earlier system wrote it: these keys and no others.
EARLIER_SYSTEM_FILE = {
    "runId": RUN_ID,
    "status": "completed",
    "settings": {
        "confThreshold": 35,
        "predictionMode": "pointmap",
        "maskBlackBg": True,
        "maskWhiteBg": False,
        "maskSky": True,
        "showCameras": False,
    },
    "images": ["frame_000.jpg", "frame_001.jpg"],
    "requestedAt": "2025-10-28T06:07:06.077Z",
    "startedAt": "2025-10-28T06:07:07.100Z",
    "finishedAt": "2025-10-28T06:08:09.350Z",
    "error": None,
    "artifacts": {"glb": "scene.glb", "predictions": None},
}


def _error_for(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        VGGTSettings.model_validate(data)
    return info.value


# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults():
    settings = VGGTSettings()
    assert settings.conf_threshold == 50
    assert settings.prediction_mode == "depth"
    assert settings.mask_black_bg is False
    assert settings.mask_white_bg is False
    assert settings.mask_sky is False
    assert settings.show_cameras is True
    assert settings.to_json_dict() == {
        "confThreshold": 50.0,
        "predictionMode": "depth",
        "maskBlackBg": False,
        "maskWhiteBg": False,
        "maskSky": False,
        "showCameras": True,
    }


def test_settings_accept_camel_and_snake_case_and_the_range_ends():
    camel = VGGTSettings.model_validate({"confThreshold": 0, "predictionMode": "pointmap"})
    snake = VGGTSettings(conf_threshold=100, mask_sky=True)
    assert (camel.conf_threshold, camel.prediction_mode) == (0, "pointmap")
    assert (snake.conf_threshold, snake.mask_sky) == (100, True)


def test_settings_are_immutable():
    settings = VGGTSettings()
    with pytest.raises(ValidationError):
        settings.conf_threshold = 10  # type: ignore[misc]
    assert settings.conf_threshold == 50


def test_unknown_setting_is_refused_and_named():
    error = _error_for({"confThreshold": 40, "confidence": 40})
    assert [e["type"] for e in error.errors()] == ["extra_forbidden"]
    assert describe_validation_error(error) == "Unknown setting 'confidence'."


@pytest.mark.parametrize("value", [-0.001, -1, 100.01, 1e9])
def test_conf_threshold_out_of_range_is_refused(value):
    error = _error_for({"confThreshold": value})
    text = describe_validation_error(error)
    assert text == f"Confidence threshold must be between 0 and 100, not {value!r}."


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf"])
def test_conf_threshold_not_finite_is_refused(value):
    error = _error_for({"confThreshold": value})
    text = describe_validation_error(error)
    assert text.startswith("Confidence threshold: ")
    assert "finite" in text
    assert text.endswith(".")


def test_conf_threshold_nan_in_json_is_refused():
    with pytest.raises(ValidationError):
        VGGTSettings.model_validate_json('{"confThreshold": NaN}')


@pytest.mark.parametrize("mode", ["points", "Depth", "", "Pointmap Branch", 1, None])
def test_wrong_prediction_mode_is_refused(mode):
    error = _error_for({"predictionMode": mode})
    assert describe_validation_error(error) == (
        f"Prediction mode must be 'pointmap' or 'depth', not {mode!r}."
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("confThreshold", "high"),
        ("confThreshold", [50]),
        ("confThreshold", None),
        ("maskBlackBg", "maybe"),
        ("maskWhiteBg", 2),
        ("maskSky", None),
        ("showCameras", {"yes": True}),
    ],
)
def test_wrong_types_are_refused_with_the_field_named(key, value):
    error = _error_for({key: value})
    text = describe_validation_error(error)
    label = "Confidence threshold" if key == "confThreshold" else key
    assert text.startswith(f"{label}: ")
    assert text.endswith(".")
    assert "Traceback" not in text


def test_every_problem_is_described_once():
    error = _error_for(
        {"confThreshold": 150, "predictionMode": "both", "maskSky": "perhaps", "extra": 1}
    )
    text = describe_validation_error(error)
    assert error.error_count() == 4
    assert "Confidence threshold must be between 0 and 100, not 150." in text
    assert "Prediction mode must be 'pointmap' or 'depth', not 'both'." in text
    assert "maskSky: " in text
    assert "Unknown setting 'extra'." in text


def test_snake_case_input_is_described_like_camel_case():
    with pytest.raises(ValidationError) as info:
        VGGTSettings(conf_threshold=150, prediction_mode="x")  # type: ignore[arg-type]
    assert describe_validation_error(info.value) == (
        "Confidence threshold must be between 0 and 100, not 150. "
        "Prediction mode must be 'pointmap' or 'depth', not 'x'."
    )


def test_settings_error_inside_a_run_names_the_setting():
    with pytest.raises(ValidationError) as info:
        VGGTRun.model_validate({"runId": RUN_ID, "settings": {"confThreshold": 101}})
    text = describe_validation_error(info.value)
    assert text == "Confidence threshold must be between 0 and 100, not 101."


def test_other_range_errors_do_not_claim_the_confidence_range():
    with pytest.raises(ValidationError) as info:
        VGGTRun.model_validate({"runId": RUN_ID, "progress": {"fraction": 2}})
    text = describe_validation_error(info.value)
    assert "fraction" in text
    assert "between 0 and 100" not in text


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            VGGTSettings(),
            {
                "conf_thres": 50.0,
                "frame_filter": "All",
                "mask_black_bg": False,
                "mask_white_bg": False,
                "show_cam": True,
                "mask_sky": False,
                "prediction_mode": "Depthmap and Camera Branch",
            },
        ),
        (
            VGGTSettings(
                conf_threshold=12.5,
                prediction_mode="pointmap",
                mask_black_bg=True,
                mask_white_bg=True,
                mask_sky=True,
                show_cameras=False,
            ),
            {
                "conf_thres": 12.5,
                "frame_filter": "All",
                "mask_black_bg": True,
                "mask_white_bg": True,
                "show_cam": False,
                "mask_sky": True,
                "prediction_mode": "Pointmap Branch",
            },
        ),
    ],
)
def test_space_kwargs_follow_the_space_api_mapping(settings, expected):
    kwargs = settings.space_kwargs()
    assert kwargs == expected
    assert type(kwargs["conf_thres"]) is float


def test_space_kwargs_pass_the_frame_filter_and_int_threshold_as_float():
    kwargs = VGGTSettings(conf_threshold=30).space_kwargs(frame_filter="2: frame_002.jpg")
    assert kwargs["frame_filter"] == "2: frame_002.jpg"
    assert kwargs["conf_thres"] == 30.0
    assert type(kwargs["conf_thres"]) is float


# --- runs and timestamps -----------------------------------------------------------------------


def test_run_defaults():
    run = VGGTRun(run_id=RUN_ID)
    assert run.status is RunStatus.queued
    assert run.settings == VGGTSettings()
    assert run.images == []
    assert run.submitted_at is run.started_at is run.finished_at is None
    assert run.error is None
    assert run.artifacts == Artifacts()
    assert run.requested_at.tzinfo is not None
    assert abs(run.requested_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert run.requested_at.microsecond % 1000 == 0


def test_utc_now_is_utc_and_whole_milliseconds():
    now = utc_now()
    assert now.utcoffset() == timedelta(0)
    assert now.microsecond % 1000 == 0


def _full_run() -> VGGTRun:
    start = datetime(2025, 10, 28, 6, 7, 6, 77_000, tzinfo=UTC)
    return VGGTRun(
        run_id=RUN_ID,
        status=RunStatus.completed,
        settings=VGGTSettings(conf_threshold=42.5, prediction_mode="pointmap", mask_sky=True),
        images=["a.jpg", "b.png"],
        requested_at=start,
        submitted_at=start + timedelta(milliseconds=5),
        started_at=start + timedelta(seconds=1),
        finished_at=start + timedelta(seconds=61, milliseconds=250),
        error=None,
        artifacts=Artifacts(glb="scene.glb", predictions="predictions.npz"),
        progress=RunProgress(
            rank=0, queue_size=3, eta=12.5, fraction=0.5, message="step", updated_at=start
        ),
        backend="facebook/vggt",
        remote=RemoteJob(target_dir="/tmp/x"),
        presize=False,
        upload=UploadStats(bytes_sent=10, bytes_original=100, files_resized=2),
    )


def test_run_round_trips_through_json_with_camel_case_keys():
    run = _full_run()
    data = run.to_json_dict()
    assert set(data) == {
        "runId",
        "status",
        "settings",
        "images",
        "requestedAt",
        "submittedAt",
        "startedAt",
        "finishedAt",
        "error",
        "artifacts",
        "progress",
        "backend",
        "remote",
        "presize",
        "upload",
        "video",
        "attempt",
        "attempts",
        "cancelRequestedAt",
        "errorKind",
        "versions",
        "parentRunId",
    }
    assert set(data["settings"]) == {
        "confThreshold",
        "predictionMode",
        "maskBlackBg",
        "maskWhiteBg",
        "maskSky",
        "showCameras",
    }
    assert set(data["progress"]) == {"rank", "queueSize", "eta", "fraction", "message", "updatedAt"}
    assert data["remote"] == {"targetDir": "/tmp/x", "frames": None, "sessionHash": None}
    assert data["upload"] == {
        "bytesSent": 10,
        "bytesOriginal": 100,
        "filesResized": 2,
        "originalsReason": None,
    }
    assert data["status"] == "completed"
    text = json.dumps(data)
    back = VGGTRun.model_validate_json(text)
    assert back == run
    assert back.to_json_dict() == data
    assert back.duration_s == pytest.approx(60.25)


def test_timestamps_are_iso_8601_utc_with_milliseconds_and_z():
    run = _full_run()
    data = run.to_json_dict()
    assert data["requestedAt"] == "2025-10-28T06:07:06.077Z"
    assert data["finishedAt"] == "2025-10-28T06:08:07.327Z"
    for key in ("requestedAt", "submittedAt", "startedAt", "finishedAt"):
        assert ISO_MS_Z.fullmatch(data[key]), data[key]
    assert ISO_MS_Z.fullmatch(data["progress"]["updatedAt"])
    assert ISO_MS_Z.fullmatch(VGGTRun(run_id=RUN_ID).to_json_dict()["requestedAt"])


def test_timestamps_in_other_zones_and_naive_ones_are_stored_as_utc():
    plus_two = timezone(timedelta(hours=2))
    run = VGGTRun(
        run_id=RUN_ID,
        requested_at=datetime(2025, 1, 1, 2, 0, 0, 123_456, tzinfo=plus_two),
        started_at="2025-01-01T00:00:01.5",  # naive: taken as UTC, not local time
        finished_at="2025-01-01T03:00:02+02:00",
    )
    data = run.to_json_dict()
    assert data["requestedAt"] == "2025-01-01T00:00:00.123Z"
    assert data["startedAt"] == "2025-01-01T00:00:01.500Z"
    assert data["finishedAt"] == "2025-01-01T01:00:02.000Z"
    assert run.started_at.utcoffset() == timedelta(0)


def test_is_active_and_duration():
    run = VGGTRun(run_id=RUN_ID)
    assert not run.is_active
    assert run.duration_s is None
    run.submitted_at = utc_now()
    assert run.is_active
    for status in RunStatus:
        run.status = status
        assert run.is_active == (status in ACTIVE_STATUSES or status is RunStatus.queued)
    run.submitted_at = None
    run.status = RunStatus.queued
    assert not run.is_active
    assert not (ACTIVE_STATUSES & FINAL_STATUSES)
    assert ACTIVE_STATUSES | FINAL_STATUSES | {RunStatus.queued} == set(RunStatus)


# --- files of the earlier system and unknown keys -----------------------------------------------


def _plant(store: RunStore, data: dict) -> Path:
    folder = store.runs_dir / data["runId"]
    (folder / "images").mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(data, indent=2))
    return folder


def test_earlier_system_metadata_loads(tmp_path):
    assert set(EARLIER_SYSTEM_FILE) == {
        "runId",
        "status",
        "settings",
        "images",
        "requestedAt",
        "startedAt",
        "finishedAt",
        "error",
        "artifacts",
    }
    store = RunStore(tmp_path / "storage")
    _plant(store, EARLIER_SYSTEM_FILE)
    run = store.load(RUN_ID)
    assert run.run_id == RUN_ID
    assert run.status is RunStatus.completed
    assert run.settings == VGGTSettings(
        conf_threshold=35,
        prediction_mode="pointmap",
        mask_black_bg=True,
        mask_sky=True,
        show_cameras=False,
    )
    assert run.images == ["frame_000.jpg", "frame_001.jpg"]
    assert run.requested_at == datetime(2025, 10, 28, 6, 7, 6, 77_000, tzinfo=UTC)
    assert run.duration_s == pytest.approx(62.25)
    assert run.submitted_at is None
    assert run.artifacts == Artifacts(glb="scene.glb", predictions=None)
    assert not run.is_active
    page = store.list_runs()
    assert [r.run_id for r in page.runs] == [RUN_ID]
    assert page.broken == []
    assert store.counts()["completed"] == 1


def test_earlier_system_metadata_survives_an_update_unchanged(tmp_path):
    store = RunStore(tmp_path / "storage")
    folder = _plant(store, EARLIER_SYSTEM_FILE)
    store.update(RUN_ID, lambda run: None)
    written = json.loads((folder / "metadata.json").read_text())
    for key, value in EARLIER_SYSTEM_FILE.items():
        assert written[key] == value, key


def test_unknown_top_level_keys_are_kept_through_update(tmp_path):
    store = RunStore(tmp_path / "storage")
    old = {
        **EARLIER_SYSTEM_FILE,
        "status": "failed",
        "error": "boom",
        "notes": "keep me",
        "legacyStats": {"points": 123, "nested": [1, 2, {"x": None}]},
        "tags": ["a", "b"],
    }
    folder = _plant(store, old)
    store.update(RUN_ID, lambda run: run.model_copy(update={"status": RunStatus.queued}))
    written = json.loads((folder / "metadata.json").read_text())
    assert written["status"] == "queued"
    assert written["notes"] == "keep me"
    assert written["legacyStats"] == {"points": 123, "nested": [1, 2, {"x": None}]}
    assert written["tags"] == ["a", "b"]
    again = store.load(RUN_ID)
    assert again.model_extra == {
        "notes": "keep me",
        "legacyStats": {"points": 123, "nested": [1, 2, {"x": None}]},
        "tags": ["a", "b"],
    }
