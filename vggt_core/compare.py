"""Comparing runs, or versions of one run: their settings side by side, what differs, the counts."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from .errors import InvalidRunId, RunNotFound
from .listing import is_valid_run_id
from .models import RenderStatus, VGGTRun, VGGTSettings

__all__ = ["COMPARED_FIELDS", "CompareItem", "Comparison", "compare_items", "parse_ref"]

_REF = re.compile(r"^(?P<run>[^@]+)(?:@v?(?P<version>[1-9][0-9]{0,5}))?$")
MAX_COMPARED = 6

# The fields shown row by row, with the label a person reads.
COMPARED_FIELDS: dict[str, str] = {
    "conf_threshold": "Confidence threshold",
    "prediction_mode": "Prediction mode",
    "mask_black_bg": "Mask black background",
    "mask_white_bg": "Mask white background",
    "mask_sky": "Mask sky",
    "show_cameras": "Show cameras",
    "frame": "Frame",
    "points": "Points",
    "cameras": "Cameras",
    "images": "Images",
    "duration_s": "Run duration (s)",
    "bytes_sent": "Bytes sent",
    "backend": "Backend",
}


class CompareItem(BaseModel):
    """One compared run version: its settings and what it holds."""

    run_id: str
    version: int
    settings: VGGTSettings
    frame: int | None = None
    points: int | None = None
    cameras: int | None = Field(None, description="Camera cones in the GLB, when it was read.")
    images: int
    duration_s: float | None = None
    bytes_sent: int | None = None
    backend: str | None = None

    @property
    def label(self) -> str:
        """`run_… v2`."""
        return f"{self.run_id} v{self.version}"

    def value(self, name: str) -> object:
        """The value of one compared field."""
        if name in VGGTSettings.model_fields:
            return getattr(self.settings, name)
        return getattr(self, name)


class Comparison(BaseModel):
    """Runs or versions side by side; `differs` names the fields whose values are not all equal."""

    items: list[CompareItem]
    differs: list[str]


def parse_ref(text: str) -> tuple[str, int | None]:
    """`run_…` or `run_…@2` / `run_…@v2` as (run id, version or None for the newest)."""
    match = _REF.match(text.strip())
    if match is None or not is_valid_run_id(match["run"]):
        raise InvalidRunId(
            f"'{text[:80]}' is not a run to compare: give a run id, or run id@version (run_…@2)"
        )
    version = match["version"]
    return match["run"], int(version) if version else None


def compare_items(pairs: list[tuple[VGGTRun, int | None]]) -> Comparison:
    """Line up the chosen versions of these runs (`None`: each run's newest)."""
    if len(pairs) > MAX_COMPARED:
        raise InvalidRunId(f"Compare at most {MAX_COMPARED} at a time, not {len(pairs)}")
    items = []
    for run, number in pairs:
        version = run.version(number)
        if version is None or version.status is not RenderStatus.completed:
            which = "rendered version" if number is None else f"version {number}"
            raise RunNotFound(f"Run {run.run_id} has no {which} to compare")
        items.append(
            CompareItem(
                run_id=run.run_id,
                version=version.number,
                settings=version.settings,
                frame=version.frame,
                points=version.points,
                cameras=version.cameras,
                images=len(run.images),
                duration_s=None if run.duration_s is None else round(run.duration_s, 1),
                bytes_sent=run.upload.bytes_sent if run.upload else None,
                backend=run.backend,
            )
        )
    differs = [
        name for name in COMPARED_FIELDS if len({repr(item.value(name)) for item in items}) > 1
    ]
    return Comparison(items=items, differs=differs)
