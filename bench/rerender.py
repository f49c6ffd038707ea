"""A re-render's wall time against a full run's, on the stand-in with the demo's model delay."""

from __future__ import annotations

import statistics
import time

from bench.common import Figure
from bench.overhead import new_run, product_run, sample_files, stand_in, temp_dir
from vggt_core import RenderStatus, StudioService, VGGTSettings, load_config
from vggt_core.demo import DEFAULT_DELAY_S
from vggt_core.local_space import StandInOptions

TARGET = 0.2


def _service(root: str, backend: str) -> StudioService:
    config = load_config(
        {"VGGT_BACKEND": backend, "VGGT_STORAGE_DIR": root, "VGGT_MAX_CONCURRENT_RUNS": "1"}
    )
    return StudioService(config)


def rerender_s(service: StudioService, run_id: str, conf: float, frame: int | None = None) -> float:
    """Seconds from the request to the new version on disk; raises unless it completed."""
    start = time.perf_counter()
    version = service.rerender(run_id, VGGTSettings(conf_threshold=conf), frame=frame)
    done = service.wait_render(run_id, version.number, timeout=120)
    elapsed = time.perf_counter() - start
    if done.status is not RenderStatus.completed:
        raise RuntimeError(f"re-render of {run_id} ended {done.status}: {done.error}")
    return elapsed


def run(quick: bool) -> list[Figure]:
    """Interleave full runs and re-renders of them (each a new threshold: no backend cache)."""
    count = 2 if quick else 5
    with (
        temp_dir("vggt-bench-rerender-") as work,
        stand_in(StandInOptions(delay=DEFAULT_DELAY_S), work) as space,
    ):
        files = sample_files(work / "images")
        service = _service(str(work / "storage"), space.url)
        try:
            runs, renders, one_frame = [], [], []
            for i in range(count + 1):  # the first round warms up and is not counted
                run_id = new_run(service, files)
                full = product_run(service, run_id)
                again = rerender_s(service, run_id, 20.0 + i)
                frame = rerender_s(service, run_id, 30.0 + i, frame=1)
                if i:
                    runs.append(full)
                    renders.append(again)
                    one_frame.append(frame)
        finally:
            service.close()
    ratio = statistics.median(renders) / statistics.median(runs)
    setup = f"{count} pairs, model delay {DEFAULT_DELAY_S:g} s, {len(files)} images"
    return [
        Figure(
            "rerender_ratio (re-render median / full run median)",
            f"{ratio:.3f} ({setup})",
            f"≤ {TARGET}",
            ratio <= TARGET,
        ),
        Figure("rerender_full_run_median_s", f"{statistics.median(runs):.3f}", "", None),
        Figure("rerender_median_s", f"{statistics.median(renders):.3f}", "", None),
        Figure("rerender_one_frame_median_s", f"{statistics.median(one_frame):.3f}", "", None),
    ]
