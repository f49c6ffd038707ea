"""How exact the cameras read from a GLB are, against the stand-in's ground truth, and their cost.

`PYTHONPATH=. .venv/bin/python -m bench.cameras [--quick]` prints the worst error of each figure
over the depth-branch cases (1-12 frames, landscape and portrait, masks on and off), the pointmap
estimate's focal error, and the recovery's time as a ratio of reading the GLB alone.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Figure
from vggt_core.cameras import CameraSet, cameras_from_glb
from vggt_core.glb import predictions_to_glb, read_glb
from vggt_core.local_space import write_sample_images
from vggt_core.local_space._model import load_and_preprocess_images, run_stand_in_model

CASES = [  # frames, photo size, confidence percentile, mask black, mask white
    (1, (160, 120), 50.0, False, False),
    (3, (120, 200), 30.0, True, True),
    (5, (200, 100), 0.0, False, False),
    (12, (160, 120), 60.0, True, False),
]


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    m = a @ b.T
    sin = np.linalg.norm([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / 2
    return math.degrees(math.atan2(sin, (np.trace(m) - 1) / 2))


def _errors(found: CameraSet, truth: dict[str, np.ndarray]) -> list[float]:
    worst = [0.0, 0.0, 0.0, 0.0]
    for c in found.cameras:
        k, e = truth["intrinsic"][c.index].astype(np.float64), truth["extrinsic"][c.index]
        e = e.astype(np.float64)
        figures = [
            float(np.abs(np.diag(c.intrinsic)[:2] / np.diag(k)[:2] - 1).max()),
            float(np.abs(c.intrinsic[:2, 2] - k[:2, 2]).max()),
            _angle(c.extrinsic[:3, :3], e[:, :3]),
            float(np.linalg.norm(c.center + e[:, :3].T @ e[:, 3]) / found.scene_scale),
        ]
        worst = [max(w, f) for w, f in zip(worst, figures, strict=True)]
    return worst


def _build(
    folder: Path, case: tuple[int, tuple[int, int], float, bool, bool], mode: str, jitter: bool
) -> tuple[Path, dict[str, np.ndarray]]:
    count, size, conf, black, white = case
    paths = write_sample_images(folder / "images", count=count, size=size)
    truth = run_stand_in_model(load_and_preprocess_images(sorted(paths)))
    if jitter:  # a point head off the pixel rays, as VGGT's
        rng = np.random.default_rng(3)
        points = truth["world_points"]
        truth["world_points"] = points * (1 + 0.005 * rng.standard_normal(points.shape))
    glb = folder / "scene.glb"
    predictions_to_glb(
        truth, conf_thres=conf, mask_black_bg=black, mask_white_bg=white, prediction_mode=mode
    ).export(glb)
    return glb, truth


def run(quick: bool) -> list[Figure]:
    """The worst errors over the cases, the pointmap estimate, and the recovery's cost."""
    cases = CASES[:2] if quick else CASES
    worst = [0.0, 0.0, 0.0, 0.0]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, case in enumerate(cases):
            glb, truth = _build(Path(tmp) / f"d{n}", case, "Depthmap and Camera Branch", False)
            start = time.perf_counter()
            read_glb(glb)
            read = time.perf_counter() - start
            start = time.perf_counter()
            found = cameras_from_glb(glb)
            ratios.append((time.perf_counter() - start) / read)
            worst = [max(w, f) for w, f in zip(worst, _errors(found, truth), strict=True)]
        glb, truth = _build(Path(tmp) / "p", CASES[1], "Predicted Pointmap", True)
        pointmap = _errors(cameras_from_glb(glb), truth)
    return [
        Figure("cameras_focal_rel_error", f"{worst[0]:.1e}", "< 1e-4", worst[0] < 1e-4),
        Figure("cameras_principal_px_error", f"{worst[1]:.1e}", "< 0.01", worst[1] < 0.01),
        Figure("cameras_rotation_deg_error", f"{worst[2]:.1e}", "< 0.001", worst[2] < 0.001),
        Figure("cameras_centre_error_of_scene", f"{worst[3]:.1e}", "< 1e-5", worst[3] < 1e-5),
        Figure("cameras_pointmap_focal_rel_error (estimate)", f"{pointmap[0]:.3f}", "", None),
        Figure(
            "cameras_recovery_over_glb_read (median ratio)", f"{np.median(ratios):.0f}", "", None
        ),
    ]


if __name__ == "__main__":
    for figure in run("--quick" in sys.argv):
        print(figure.line())
