"""The app's configuration (StudioConfig): environment, Streamlit secrets, defaults, ranges."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["StudioConfig", "describe_config_error", "load_config"]

# A day: longer waits are a typo or "inf", and every one of them ends up in httpx or a deadline.
MAX_TIMEOUT_S = 86400.0
_SPACE_ID = re.compile(r"[\w.-]+/[\w.-]+")
_BACKEND_RULE = "a Space id (owner/name) or an http(s):// URL"
# A bearer token anyone could guess is no protection: refuse a short one rather than serve with it.
MIN_API_TOKEN_CHARS = 16


def _timeout(default: float, variable: str) -> Any:
    return Field(default, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, validation_alias=variable)


class StudioConfig(BaseSettings):
    """Everything configurable; each field is read from the environment variable named beside it."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    backend: str = Field("facebook/vggt", validation_alias="VGGT_BACKEND")
    hf_token: SecretStr | None = Field(None, validation_alias="HF_TOKEN")
    # The REST API's bearer token; unset, the API answers loopback clients only.
    api_token: SecretStr | None = Field(None, validation_alias="VGGT_API_TOKEN")
    storage_dir: Path = Field(Path("storage"), validation_alias="VGGT_STORAGE_DIR")
    max_concurrent_runs: int = Field(
        2,
        ge=1,
        le=32,
        validation_alias="VGGT_MAX_CONCURRENT_RUNS",
    )
    # Photos decoded at once for upload by the whole process, whatever the number of runs.
    prep_workers: int = Field(2, ge=1, le=32, validation_alias="VGGT_PREP_WORKERS")
    max_images_per_run: int = Field(200, ge=1, le=10_000, validation_alias="VGGT_MAX_IMAGES")
    session_keep_s: float = Field(
        3000.0,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        validation_alias="VGGT_SESSION_KEEP_S",
        description="How long after a run completes a one-frame re-render resumes the backend "
        "session that reconstructed it (Gradio drops a closed session's state after an hour); "
        "0: never.",
    )
    max_image_bytes: int = Field(
        30 * 1024 * 1024,
        ge=1,
        le=1024**3,
        validation_alias="VGGT_MAX_IMAGE_BYTES",
    )
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        le=1_000_000_000,
        validation_alias="VGGT_MAX_IMAGE_PIXELS",
    )
    max_video_bytes: int = Field(
        200 * 1024 * 1024, ge=1, le=16 * 1024**3, validation_alias="VGGT_MAX_VIDEO_BYTES"
    )
    max_video_seconds: float = Field(
        600.0,
        gt=0,
        le=MAX_TIMEOUT_S,
        allow_inf_nan=False,
        validation_alias="VGGT_MAX_VIDEO_SECONDS",
    )
    # More frames than this from one clip is refused (the user lowers the rate), never trimmed.
    max_video_frames: int = Field(100, ge=1, le=10_000, validation_alias="VGGT_MAX_VIDEO_FRAMES")
    connect_timeout_s: float = _timeout(15.0, "VGGT_CONNECT_TIMEOUT")
    # Longer than the 15 s heartbeat of a Gradio event stream, so only a frozen server trips it.
    read_timeout_s: float = _timeout(60.0, "VGGT_READ_TIMEOUT")
    job_timeout_s: float = _timeout(1800.0, "VGGT_JOB_TIMEOUT")
    download_timeout_s: float = _timeout(600.0, "VGGT_DOWNLOAD_TIMEOUT")
    presize: bool = Field(True, validation_alias="VGGT_PRESIZE")
    preview_points: int = Field(
        200_000, ge=1000, le=10_000_000, validation_alias="VGGT_PREVIEW_POINTS"
    )

    @field_validator("backend")
    @classmethod
    def _backend_is_a_space_or_url(cls, value: str) -> str:
        text = value.strip()
        if text.startswith(("http://", "https://")):
            if text.split("://", 1)[1].split("/", 1)[0]:
                return text
        elif _SPACE_ID.fullmatch(text):
            return text
        raise ValueError(_BACKEND_RULE)

    @field_validator("api_token")
    @classmethod
    def _api_token_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        text = "" if value is None else value.get_secret_value().strip()
        if text and len(text) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"at least {MIN_API_TOKEN_CHARS} characters")
        return value

    @property
    def api_token_value(self) -> str | None:
        """The REST API's bearer token, for comparing only; None when unset or blank."""
        if self.api_token is None:
            return None
        return self.api_token.get_secret_value().strip() or None

    @property
    def token(self) -> str | None:
        """The HF token's value, for the gradio client only; None when unset or blank."""
        if self.hf_token is None:
            return None
        return self.hf_token.get_secret_value().strip() or None


def _variables() -> dict[str, str]:
    """Each field's environment variable, by field name and by variable name."""
    by_name: dict[str, str] = {}
    for name, info in StudioConfig.model_fields.items():
        variable = str(info.validation_alias)
        by_name[name] = by_name[variable] = variable
    return by_name


def _rule(field: str) -> str:
    """What `field` accepts, in words, from its type and bounds."""
    info = StudioConfig.model_fields[field]
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt | annotated_types.Ge):
            low = getattr(item, "gt", getattr(item, "ge", None))
        elif isinstance(item, annotated_types.Le):
            high = item.le
    if info.annotation is bool:
        return "true or false"
    if info.annotation is float:
        return f"a finite number of seconds between {low:g} and {high:g}"
    if info.annotation is int:
        return f"a whole number from {low} to {high}"
    if field == "backend":
        return _BACKEND_RULE
    return "a valid value"


def _shown(value: Any) -> str:
    """A rejected value as it may be shown: printable, bounded, quoted only when blank."""
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        return repr(text)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 40 else text[:39] + "…"


def describe_config_error(error: ValidationError) -> str:
    """The settings' validation error as one sentence per problem, naming the variable."""
    by_variable = {info.validation_alias: name for name, info in StudioConfig.model_fields.items()}
    variables = _variables()
    parts = []
    for item in error.errors():
        key = str(item["loc"][0]) if item["loc"] else ""
        variable = variables.get(key) or variables.get(key.upper(), key or "A setting")
        field = by_variable.get(variable)
        if field is None:
            parts.append(f"{variable}: {item['msg']}.")
        elif field == "hf_token":
            parts.append(f"{variable} must be text.")  # its value is never shown
        elif field == "api_token":
            parts.append(f"{variable} must be text of at least {MIN_API_TOKEN_CHARS} characters.")
        else:
            parts.append(f"{variable} must be {_rule(field)}, not {_shown(item['input'])}.")
    return " ".join(sorted(parts))


def load_config(overrides: Mapping[str, Any] | None = None) -> StudioConfig:
    """StudioConfig from the environment, `overrides` (e.g. Streamlit secrets) taking precedence.

    Overrides may be named by variable (`VGGT_BACKEND`) or by field (`backend`); the environment
    is read by variable name only. A ValidationError names each variable in its `loc`;
    `describe_config_error` turns it into sentences a person can act on.
    """
    by_name = _variables()
    picked = {
        by_name[key]: value
        for key, value in (overrides or {}).items()
        if key in by_name and value not in (None, "")
    }
    return StudioConfig(**picked)
