"""StudioConfig: defaults, environment, overrides (Streamlit secrets), the secret token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_images import jpeg_bytes
from pydantic import SecretStr, ValidationError

from vggt_core import ImagesRejected, StudioService
from vggt_core.config import StudioConfig, describe_config_error, load_config

TOKEN = "hf_s3cr3tTOKENvalue1234567890"  # made up; asserted never to be shown

ENV_VARS = [
    "VGGT_BACKEND",
    "HF_TOKEN",
    "VGGT_STORAGE_DIR",
    "VGGT_MAX_CONCURRENT_RUNS",
    "VGGT_MAX_IMAGES",
    "VGGT_MAX_IMAGE_BYTES",
    "VGGT_MAX_IMAGE_PIXELS",
    "VGGT_CONNECT_TIMEOUT",
    "VGGT_READ_TIMEOUT",
    "VGGT_JOB_TIMEOUT",
    "VGGT_DOWNLOAD_TIMEOUT",
    "VGGT_PRESIZE",
    "VGGT_PREVIEW_POINTS",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting leaks in from the machine running the tests (nor a .env in the cwd)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # Field names double as aliases; keep those out of the environment too.
    for name in StudioConfig.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    settings = load_config()
    assert settings.backend == "facebook/vggt"
    assert settings.hf_token is None
    assert settings.token is None
    assert settings.storage_dir == Path("storage")
    assert settings.max_concurrent_runs == 2
    assert settings.max_images_per_run == 200
    assert settings.max_image_bytes == 30 * 1024 * 1024
    assert settings.max_image_pixels == 100_000_000
    assert settings.connect_timeout_s == 15.0
    assert settings.read_timeout_s == 60.0
    assert settings.job_timeout_s == 1800.0
    assert settings.presize is True
    assert settings.preview_points == 200_000


def test_environment_variables_are_read(monkeypatch, tmp_path):
    values = {
        "VGGT_BACKEND": "http://127.0.0.1:7860",
        "HF_TOKEN": TOKEN,
        "VGGT_STORAGE_DIR": str(tmp_path / "data"),
        "VGGT_MAX_CONCURRENT_RUNS": "4",
        "VGGT_MAX_IMAGES": "12",
        "VGGT_MAX_IMAGE_BYTES": "1000",
        "VGGT_MAX_IMAGE_PIXELS": "5000",
        "VGGT_CONNECT_TIMEOUT": "2.5",
        "VGGT_READ_TIMEOUT": "30",
        "VGGT_JOB_TIMEOUT": "99",
        "VGGT_PRESIZE": "false",
        "VGGT_PREVIEW_POINTS": "5000",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_config()
    assert settings.backend == "http://127.0.0.1:7860"
    assert settings.token == TOKEN
    assert settings.storage_dir == tmp_path / "data"
    assert settings.max_concurrent_runs == 4
    assert settings.max_images_per_run == 12
    assert settings.max_image_bytes == 1000
    assert settings.max_image_pixels == 5000
    assert settings.connect_timeout_s == 2.5
    assert settings.read_timeout_s == 30.0
    assert settings.job_timeout_s == 99.0
    assert settings.presize is False
    assert settings.preview_points == 5000


def test_environment_variable_names_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("vggt_backend", "someone/vggt-copy")
    assert load_config().backend == "someone/vggt-copy"


def test_overrides_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("VGGT_BACKEND", "env/space")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    monkeypatch.setenv("VGGT_MAX_CONCURRENT_RUNS", "3")
    settings = load_config(
        {"VGGT_BACKEND": "secrets/space", "HF_TOKEN": TOKEN, "max_concurrent_runs": 5}
    )
    assert settings.backend == "secrets/space"
    assert settings.token == TOKEN
    assert settings.max_concurrent_runs == 5


def test_overrides_by_field_name_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("VGGT_BACKEND", "env/space")
    monkeypatch.setenv("VGGT_PRESIZE", "true")
    settings = load_config({"backend": "secrets/space", "presize": False})
    assert settings.backend == "secrets/space"
    assert settings.presize is False


def test_blank_or_unknown_overrides_are_ignored(monkeypatch):
    monkeypatch.setenv("VGGT_BACKEND", "env/space")
    settings = load_config(
        {"VGGT_BACKEND": "", "HF_TOKEN": None, "SOMETHING_ELSE": "x", "[section]": {"a": 1}}
    )
    assert settings.backend == "env/space"
    assert settings.token is None


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_blank_token_means_no_token(monkeypatch, blank):
    monkeypatch.setenv("HF_TOKEN", blank)
    assert load_config().token is None


def test_token_is_stripped(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", f"  {TOKEN}\n")
    assert load_config().token == TOKEN


def test_token_never_shows_in_repr_str_or_json(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    settings = load_config()
    assert isinstance(settings.hf_token, SecretStr)
    assert settings.hf_token.get_secret_value() == TOKEN
    shown = [
        repr(settings),
        str(settings),
        repr(settings.hf_token),
        str(settings.hf_token),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        str(settings.model_dump()),
        f"{settings}",
        f"{settings!r}",
    ]
    for text in shown:
        assert TOKEN not in text
        assert "s3cr3t" not in text
    assert "**********" in settings.model_dump_json()


def test_token_from_overrides_is_secret_too():
    settings = load_config({"HF_TOKEN": TOKEN})
    assert settings.token == TOKEN
    assert TOKEN not in repr(settings)
    assert TOKEN not in settings.model_dump_json()


def test_settings_are_frozen():
    settings = load_config()
    with pytest.raises(ValidationError):
        settings.backend = "other/space"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VGGT_MAX_CONCURRENT_RUNS", "0"),
        ("VGGT_MAX_CONCURRENT_RUNS", "-1"),
        ("VGGT_MAX_CONCURRENT_RUNS", "33"),
        ("VGGT_MAX_CONCURRENT_RUNS", "two"),
        ("VGGT_MAX_CONCURRENT_RUNS", "1.5"),
        ("VGGT_MAX_IMAGES", "0"),
        ("VGGT_MAX_IMAGE_BYTES", "0"),
        ("VGGT_MAX_IMAGE_PIXELS", "-5"),
        ("VGGT_CONNECT_TIMEOUT", "0"),
        ("VGGT_READ_TIMEOUT", "-1"),
        ("VGGT_JOB_TIMEOUT", "soon"),
        ("VGGT_PRESIZE", "perhaps"),
        ("VGGT_PREVIEW_POINTS", "999"),
    ],
)
def test_invalid_environment_values_raise(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        load_config()
    assert name in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [{"max_concurrent_runs": 0}, {"VGGT_MAX_CONCURRENT_RUNS": 100}, {"connect_timeout_s": -1}],
)
def test_invalid_overrides_raise(overrides):
    with pytest.raises(ValidationError):
        load_config(overrides)


def test_max_concurrent_runs_bounds_are_accepted(monkeypatch):
    monkeypatch.setenv("VGGT_MAX_CONCURRENT_RUNS", "1")
    assert load_config().max_concurrent_runs == 1
    monkeypatch.setenv("VGGT_MAX_CONCURRENT_RUNS", "32")
    assert load_config().max_concurrent_runs == 32


def test_service_store_uses_the_configured_root_and_limits(monkeypatch, tmp_path):
    monkeypatch.setenv("VGGT_STORAGE_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VGGT_MAX_IMAGES", "2")
    monkeypatch.setenv("VGGT_MAX_IMAGE_BYTES", "5000")
    monkeypatch.setenv("VGGT_MAX_IMAGE_PIXELS", "4000")
    store = StudioService(load_config(), workers=False).store
    assert store.root == (tmp_path / "data").resolve()
    assert (tmp_path / "data" / "runs").is_dir()
    assert (store.max_images, store.max_image_bytes, store.max_image_pixels) == (2, 5000, 4000)
    run = store.create_run()
    small = jpeg_bytes(40, 30)
    assert len(small) <= 5000
    store.add_images(run.run_id, [("a.jpg", small), ("b.jpg", small)])
    with pytest.raises(ImagesRejected, match="at most 2 images"):
        store.add_images(run.run_id, [("c.jpg", small)])
    with pytest.raises(ImagesRejected, match="megapixels"):
        store.add_images(store.create_run().run_id, [("big.jpg", jpeg_bytes(80, 60))])


# --- every setting's range, and the message that names the variable ----------------------------

TIMEOUTS = [
    "VGGT_CONNECT_TIMEOUT",
    "VGGT_READ_TIMEOUT",
    "VGGT_JOB_TIMEOUT",
    "VGGT_DOWNLOAD_TIMEOUT",
]


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e308", "86401", "0", "-3"])
def test_timeouts_must_be_finite_and_bounded(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        load_config()
    message = describe_config_error(info.value)
    assert message == (
        f"{name} must be a finite number of seconds between 0 and 86400, not {value}."
    )


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", ["0.001", "86400", "2.5"])
def test_timeouts_inside_the_range_are_accepted(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    settings = load_config()
    field = {
        "VGGT_CONNECT_TIMEOUT": "connect_timeout_s",
        "VGGT_READ_TIMEOUT": "read_timeout_s",
        "VGGT_JOB_TIMEOUT": "job_timeout_s",
        "VGGT_DOWNLOAD_TIMEOUT": "download_timeout_s",
    }[name]
    assert getattr(settings, field) == float(value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("VGGT_MAX_CONCURRENT_RUNS", "33", "a whole number from 1 to 32, not 33"),
        ("VGGT_MAX_CONCURRENT_RUNS", "two", "a whole number from 1 to 32, not two"),
        ("VGGT_MAX_IMAGES", "0", "a whole number from 1 to 10000, not 0"),
        ("VGGT_MAX_IMAGES", "1000000000", "a whole number from 1 to 10000, not 1000000000"),
        ("VGGT_MAX_IMAGE_BYTES", "1e30", "a whole number from 1 to 1073741824, not 1e30"),
        ("VGGT_MAX_IMAGE_PIXELS", "inf", "a whole number from 1 to 1000000000, not inf"),
        ("VGGT_PREVIEW_POINTS", "999", "a whole number from 1000 to 10000000, not 999"),
        (
            "VGGT_PREVIEW_POINTS",
            "99999999999",
            "a whole number from 1000 to 10000000, not 99999999999",
        ),
        ("VGGT_PRESIZE", "perhaps", "true or false, not perhaps"),
        ("VGGT_BACKEND", "   ", "a Space id (owner/name) or an http(s):// URL, not '   '"),
        (
            "VGGT_BACKEND",
            "ftp://x/y",
            "a Space id (owner/name) or an http(s):// URL, not ftp://x/y",
        ),
        ("VGGT_BACKEND", "http://", "a Space id (owner/name) or an http(s):// URL, not http://"),
        (
            "VGGT_BACKEND",
            "just-a-name",
            "a Space id (owner/name) or an http(s):// URL, not just-a-name",
        ),
    ],
)
def test_every_setting_says_its_range_by_its_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        load_config()
    assert describe_config_error(info.value) == f"{name} must be {expected}."


def test_overrides_by_field_name_are_described_by_their_variable():
    with pytest.raises(ValidationError) as info:
        load_config({"read_timeout_s": float("inf"), "max_concurrent_runs": 0})
    assert describe_config_error(info.value) == (
        "VGGT_MAX_CONCURRENT_RUNS must be a whole number from 1 to 32, not 0. "
        "VGGT_READ_TIMEOUT must be a finite number of seconds between 0 and 86400, not inf."
    )


def test_a_long_or_unprintable_value_is_shown_bounded():
    with pytest.raises(ValidationError) as info:
        load_config({"VGGT_READ_TIMEOUT": "9" * 5000 + "\x00"})
    message = describe_config_error(info.value)
    assert message.startswith("VGGT_READ_TIMEOUT must be a finite number of seconds")
    assert len(message) < 200 and "\x00" not in message


def test_the_token_is_never_shown_in_a_config_message(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("VGGT_READ_TIMEOUT", "inf")
    with pytest.raises(ValidationError) as info:
        load_config()
    assert TOKEN not in describe_config_error(info.value)


def test_valid_backends_are_accepted(monkeypatch):
    for backend in (
        "facebook/vggt",
        "you/vggt.copy-2",
        "http://127.0.0.1:7860",
        "https://x.hf.space/",
    ):
        monkeypatch.setenv("VGGT_BACKEND", backend)
        assert load_config().backend == backend
