"""Concurrent runs: the wall time of N runs at once over one run's, with N then 2 workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Figure
from bench.overhead import bare_run, new_run, product_service, sample_files, stand_in, temp_dir
from vggt_core import RunStatus, StudioService
from vggt_core.local_space import StandInOptions

TARGET_PARALLEL = 1.3
BOUNDED_WORKERS = 2
# "≈ runs / workers": 3.5–4.6 for 8 runs on 2 workers.
BOUNDED_LOW, BOUNDED_HIGH = 0.875, 1.15
# The stand-in is one Python process on the same 2 cores: its per-run CPU (gradio's request
# handling, the fake model, the GLB) is serialized across the N runs. One small image per run keeps
# that work small beside the delay; the bare-script floor below shows what is left of it.
IMAGES = 1
IMAGE_SIZE = (160, 120)


def batch_wall(service: StudioService, run_ids: list[str]) -> float:
    """Seconds from the first start to the last of `run_ids` finished; all must complete."""
    start = time.perf_counter()
    for run_id in run_ids:
        service.start(run_id)
    runs = [service.wait(run_id, timeout=300) for run_id in run_ids]
    elapsed = time.perf_counter() - start
    failed = [
        f"{r.run_id}: {r.status.value} {r.error}"
        for r in runs
        if r.status is not RunStatus.completed
    ]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) did not complete: {failed[0]}")
    return elapsed


def measure(
    url: str, root: Path, files: list[tuple[str, bytes]], runs: int, workers: int
) -> tuple[float, float]:
    """(one run's wall time, `runs` runs' wall time) with a service of `workers` workers."""
    service = product_service(root, url, workers=workers)
    try:
        single = batch_wall(service, [new_run(service, files)])
        ids = [new_run(service, files) for _ in range(runs)]
        return single, batch_wall(service, ids)
    finally:
        service.close()


def bare_floor(url: str, paths: list[Path], work: Path, runs: int) -> tuple[float, float]:
    """(one bare run's wall time, `runs` bare runs in as many threads): the rig's own limit."""
    single = bare_run(url, paths, work / "bare_single.glb")
    start = time.perf_counter()
    with ThreadPoolExecutor(runs) as pool:
        list(pool.map(lambda i: bare_run(url, paths, work / f"bare_{i}.glb"), range(runs)))
    return single, time.perf_counter() - start


def run(quick: bool) -> list[Figure]:
    """N runs in flight against a stand-in serving N at once; the service at N then 2 workers."""
    runs, delay = (4, 1.0) if quick else (8, 2.0)
    options = StandInOptions(delay=delay, concurrency_limit=runs)
    with (
        temp_dir("vggt-bench-concurrency-") as work,
        stand_in(options, work) as space,
    ):
        files = sample_files(work / "images", IMAGES, IMAGE_SIZE)
        service = product_service(work / "warm", space.url, workers=1)
        try:  # one untimed run: imports, first connections
            batch_wall(service, [new_run(service, files)])
        finally:
            service.close()
        single_n, wall_n = measure(space.url, work / "wide", files, runs, workers=runs)
        single_2, wall_2 = measure(space.url, work / "bounded", files, runs, BOUNDED_WORKERS)
        floor = None
        if not quick:  # information only: not worth a quarter of the quick budget
            paths = sorted((work / "images").iterdir())
            floor = bare_floor(space.url, paths, work, runs)
    ratio_n = wall_n / single_n
    ratio_2 = wall_2 / single_2
    expected = runs / BOUNDED_WORKERS
    low, high = expected * BOUNDED_LOW, expected * BOUNDED_HIGH
    setup = f"{runs} runs, model delay {delay:g} s, stand-in concurrency {runs}"
    figures = [
        Figure(
            f"concurrency_ratio_{runs}_workers (wall of {runs} / wall of 1)",
            f"{ratio_n:.2f} ({setup}; {wall_n:.2f} s / {single_n:.2f} s)",
            f"≤ {TARGET_PARALLEL}",
            ratio_n <= TARGET_PARALLEL,
        ),
        Figure(
            f"concurrency_ratio_{BOUNDED_WORKERS}_workers (wall of {runs} / wall of 1)",
            f"{ratio_2:.2f} ({setup}; {wall_2:.2f} s / {single_2:.2f} s)",
            f"≈ {expected:g} ({low:.2f}–{high:.2f})",
            low <= ratio_2 <= high,
        ),
    ]
    if floor is not None:
        bare_single, bare_wall = floor
        figures.append(
            Figure(
                f"concurrency_ratio_bare_{runs}_threads (info: {runs} bare scripts at once, "
                "no product)",
                f"{bare_wall / bare_single:.2f} ({bare_wall:.2f} s / {bare_single:.2f} s): "
                "the floor set by the stand-in and the machine",
                "",
                None,
            )
        )
    return figures
