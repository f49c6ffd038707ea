"""Settings from the environment (and, via the app, Streamlit secrets): backend, token, limits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything configurable; each field is read from the environment variable named beside it."""

    model_config = SettingsConfigDict(
        case_sensitive=False, populate_by_name=True, extra="ignore", frozen=True
    )

    backend: str = Field("facebook/vggt", validation_alias=AliasChoices("VGGT_BACKEND", "backend"))
    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("HF_TOKEN", "hf_token"))
    storage_dir: Path = Field(
        Path("storage"), validation_alias=AliasChoices("VGGT_STORAGE_DIR", "storage_dir")
    )
    max_concurrent_runs: int = Field(
        2,
        ge=1,
        le=32,
        validation_alias=AliasChoices("VGGT_MAX_CONCURRENT_RUNS", "max_concurrent_runs"),
    )
    max_images_per_run: int = Field(
        200, ge=1, validation_alias=AliasChoices("VGGT_MAX_IMAGES", "max_images_per_run")
    )
    max_image_bytes: int = Field(
        30 * 1024 * 1024,
        ge=1,
        validation_alias=AliasChoices("VGGT_MAX_IMAGE_BYTES", "max_image_bytes"),
    )
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        validation_alias=AliasChoices("VGGT_MAX_IMAGE_PIXELS", "max_image_pixels"),
    )
    connect_timeout_s: float = Field(
        15.0, gt=0, validation_alias=AliasChoices("VGGT_CONNECT_TIMEOUT", "connect_timeout_s")
    )
    # Longer than the 15 s heartbeat of a Gradio event stream, so only a frozen server trips it.
    read_timeout_s: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("VGGT_READ_TIMEOUT", "read_timeout_s")
    )
    job_timeout_s: float = Field(
        1800.0, gt=0, validation_alias=AliasChoices("VGGT_JOB_TIMEOUT", "job_timeout_s")
    )
    presize: bool = Field(True, validation_alias=AliasChoices("VGGT_PRESIZE", "presize"))
    preview_points: int = Field(
        200_000, ge=1000, validation_alias=AliasChoices("VGGT_PREVIEW_POINTS", "preview_points")
    )

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
    """Settings from the environment, `overrides` (e.g. Streamlit secrets) taking precedence."""
    known = {a for f in Settings.model_fields.values() for a in _aliases(f.validation_alias)}
    picked = {k: v for k, v in (overrides or {}).items() if k in known and v not in (None, "")}
    return Settings(**picked)


def _aliases(alias: Any) -> list[str]:
    return [c for c in getattr(alias, "choices", []) if isinstance(c, str)]
