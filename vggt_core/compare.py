"""Comparing runs, or versions of one run: their settings side by side, what differs, the counts."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from .cameras import camera_poses
from .errors import ExportError, InvalidRunId, RunNotFound
from .glb import GLBError
from .listing import is_valid_run_id
from .models import RenderStatus, VGGTRun, VGGTSettings

__all__ = [
    "COMPARED_FIELDS",
    "CompareItem",
    "Comparison",
    "PoseDifference",
    "compare_items",
    "compare_poses",
    "parse_ref",
    "pose_difference",
    "poses_of",
]

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


class PoseDifference(BaseModel):
    """How far one item's cameras are from the first item's, both seen from their first camera
    and brought to one scale: rotation in degrees, centres as a fraction of the scene size."""

    item: str
    reference: str
    cameras: int
    rotation_deg_median: float
    rotation_deg_max: float
    translation_median: float
    translation_max: float


class Comparison(BaseModel):
    """Runs or versions side by side; `differs` names the fields whose values are not all equal;
    `poses` compares each item's cameras with the first item's, where both have them."""

    items: list[CompareItem]
    differs: list[str]
    poses: list[PoseDifference] = Field(default_factory=list)
    pose_notes: list[str] = Field(default_factory=list)


@functools.lru_cache(maxsize=32)
def _poses(path: str, mtime_ns: int, size: int) -> tuple[list[NDArray[np.float64]], float]:
    # A version's GLB never changes; the key still holds its stamp in case a file is replaced.
    return camera_poses(path)


def poses_of(path: Path) -> tuple[list[NDArray[np.float64]], float]:
    """A GLB's camera poses and scene size (cached per file)."""
    info = path.stat()
    return _poses(str(path), info.st_mtime_ns, info.st_size)


def pose_difference(
    reference: tuple[list[NDArray[np.float64]], float],
    other: tuple[list[NDArray[np.float64]], float],
    labels: tuple[str, str],
) -> PoseDifference:
    """Cameras of the same frames compared: both are in their first camera's frame already;
    the other's centres are scaled to the reference's (least squares) before measuring."""
    (ref, scene_size), (oth, _) = reference, other
    angles, ref_centres, oth_centres = [], [], []
    for a, b in zip(ref, oth, strict=True):
        relative = a[:3, :3] @ b[:3, :3].T
        cosine = np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)
        angles.append(float(np.degrees(np.arccos(cosine))))
        ref_centres.append(-a[:3, :3].T @ a[:3, 3])
        oth_centres.append(-b[:3, :3].T @ b[:3, 3])
    ca, cb = np.array(ref_centres), np.array(oth_centres)
    denominator = float((cb * cb).sum())
    scale = float((ca * cb).sum()) / denominator if denominator > 0 else 1.0
    offsets = np.linalg.norm(ca - scale * cb, axis=1) / max(scene_size, 1e-12)
    return PoseDifference(
        item=labels[1],
        reference=labels[0],
        cameras=len(ref),
        rotation_deg_median=float(np.median(angles)),
        rotation_deg_max=float(np.max(angles)),
        translation_median=float(np.median(offsets)),
        translation_max=float(np.max(offsets)),
    )


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


def _pose_note(
    a: CompareItem, b: CompareItem, glb_a: Path | None, glb_b: Path | None
) -> str | None:
    """Why two items' cameras cannot be compared, or None when they can."""
    if glb_a is None or glb_b is None:
        return f"{b.label}: a GLB is missing."
    if not a.cameras or not b.cameras:
        return f"{b.label}: no camera cones in one of them (re-render with cameras on)."
    if a.cameras != b.cameras:
        return f"{b.label}: {b.cameras} cameras against {a.cameras}; only the same frames compare."
    return None


def compare_poses(
    items: list[CompareItem], glbs: list[Path | None]
) -> tuple[list[PoseDifference], list[str]]:
    """Each item's cameras against the first item's, and why where they cannot be compared."""
    poses: list[PoseDifference] = []
    notes: list[str] = []
    reference, reference_glb = items[0], glbs[0]
    for item, glb in zip(items[1:], glbs[1:], strict=True):
        note = _pose_note(reference, item, reference_glb, glb)
        if note is not None:
            notes.append(note)
            continue
        assert reference_glb is not None and glb is not None  # _pose_note checked both
        try:
            labels = (reference.label, item.label)
            poses.append(pose_difference(poses_of(reference_glb), poses_of(glb), labels))
        except (ExportError, GLBError, OSError) as exc:
            notes.append(f"{item.label}: its cameras cannot be read ({exc}).")
    return poses, notes
