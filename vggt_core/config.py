"""Settings from the environment (and, via the app, Streamlit secrets): backend, token, limits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything configurable; each field is read from the environment variable named beside it."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    backend: str = Field("facebook/vggt", validation_alias="VGGT_BACKEND")
    hf_token: SecretStr | None = Field(None, validation_alias="HF_TOKEN")
    storage_dir: Path = Field(Path("storage"), validation_alias="VGGT_STORAGE_DIR")
    max_concurrent_runs: int = Field(
        2,
        ge=1,
        le=32,
        validation_alias="VGGT_MAX_CONCURRENT_RUNS",
    )
    max_images_per_run: int = Field(200, ge=1, validation_alias="VGGT_MAX_IMAGES")
    max_image_bytes: int = Field(
        30 * 1024 * 1024,
        ge=1,
        validation_alias="VGGT_MAX_IMAGE_BYTES",
    )
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        validation_alias="VGGT_MAX_IMAGE_PIXELS",
    )
    connect_timeout_s: float = Field(15.0, gt=0, validation_alias="VGGT_CONNECT_TIMEOUT")
    # Longer than the 15 s heartbeat of a Gradio event stream, so only a frozen server trips it.
    read_timeout_s: float = Field(60.0, gt=0, validation_alias="VGGT_READ_TIMEOUT")
    job_timeout_s: float = Field(1800.0, gt=0, validation_alias="VGGT_JOB_TIMEOUT")
    download_timeout_s: float = Field(600.0, gt=0, validation_alias="VGGT_DOWNLOAD_TIMEOUT")
    presize: bool = Field(True, validation_alias="VGGT_PRESIZE")
    preview_points: int = Field(200_000, ge=1000, validation_alias="VGGT_PREVIEW_POINTS")

    @property
    def token(self) -> str | None:
        """The HF token's value, for the gradio client only; None when unset or blank."""
        if self.hf_token is None:
            return None
        return self.hf_token.get_secret_value().strip() or None

    @property
    def backend_is_url(self) -> bool:
        """True for an `http(s)://` backend, False for a Space id."""
        return self.backend.startswith(("http://", "https://"))


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the environment, `overrides` (e.g. Streamlit secrets) taking precedence.

    Overrides may be named by variable (`VGGT_BACKEND`) or by field (`backend`); the environment
    is read by variable name only.
    """
    by_name: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        variable = str(info.validation_alias)
        by_name[name] = by_name[variable] = variable
    picked = {
        by_name[key]: value
        for key, value in (overrides or {}).items()
        if key in by_name and value not in (None, "")
    }
    return Settings(**picked)
