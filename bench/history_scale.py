"""History at 1k, 10k and 100k runs: a page view warm, with a run in flight, after a status
change and after a restart, with the growth fitted."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Figure
from bench.history import generate_store, listing_service
from bench.overhead import temp_dir
from vggt_core import RunProgress, RunStatus, StudioService, VGGTRun

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
PAGE_MS = 100.0  # warm, in flight, after a status change
RESTART_MS = 1000.0
GROWTH_RATIO = 2.0  # the figure at the largest size over the one at 1k
REPEATS = 9
CASES = ("warm", "in_flight", "status_change", "restart")


class PageView:
    """What one view of History asks the service, with the sidebar's disk usage cached as the app
    caches it (recomputed when the counts change)."""

    def __init__(self, service: StudioService) -> None:
        self.service = service
        self._counts: dict[str, int] | None = None

    def __call__(self) -> None:
        counts = self.service.counts()
        self.service.run_count()
        if counts != self._counts:
            self.service.disk_usage()
            self._counts = counts
        self.service.list_runs(limit=0)
        self.service.list_runs(limit=50)


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _progress(run: VGGTRun, step: int) -> None:
    run.status = RunStatus.processing
    run.progress = RunProgress(message=f"step {step}", fraction=step / 100)


def measure(root: Path, count: int) -> dict[str, float]:
    """Median ms of a page view in each case on a generated store of `count` runs."""
    generate_store(root, count, seed=count)
    app = listing_service(root)
    worker = listing_service(root)  # another writer on the same storage, as a worker process
    result: dict[str, float] = {}
    try:
        view = PageView(app)
        # The first view builds the index from the metadata files (once per storage folder).
        result["build"] = _ms(view)
        result["warm"] = statistics.median(_ms(view) for _ in range(REPEATS))
        moving = app.list_runs(status=RunStatus.completed, limit=1).runs[0].run_id
        times = []
        for step in range(REPEATS):
            worker.store.update(moving, lambda r, k=step: _progress(r, k))
            times.append(_ms(view))
        result["in_flight"] = statistics.median(times)
        times = []
        for k in range(REPEATS):
            status = RunStatus.failed if k % 2 == 0 else RunStatus.completed
            worker.store.update(moving, lambda r, s=status: setattr(r, "status", s))
            times.append(_ms(view))
        result["status_change"] = statistics.median(times)
    finally:
        worker.close()
        app.close()
    times = []
    for _ in range(3):
        fresh = listing_service(root)
        try:
            times.append(_ms(PageView(fresh)))
        finally:
            fresh.close()
    result["restart"] = statistics.median(times)
    return result


def growth(sizes: tuple[int, ...], values: list[float]) -> float:
    """The exponent k of a fit value ∝ size^k (least squares on logs): 0 flat, 1 linear."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-3)) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def run(quick: bool) -> list[Figure]:
    """History page views at each size in each case, bounds at the largest, growth fitted."""
    sizes = QUICK_SIZES if quick else SIZES
    found: dict[int, dict[str, float]] = {}
    for count in sizes:
        started = time.perf_counter()
        with temp_dir("vggt-scale-") as root:
            found[count] = measure(root, count)
        print(f"# history_scale {count:,}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    top, low = sizes[-1], sizes[0]
    builds = ", ".join(f"{n:,}: {found[n]['build'] / 1000:.1f}" for n in sizes)
    figures = [
        Figure(
            "history_index_build_s",
            f"{builds} (info: the first view with no index reads every metadata.json)",
            "",
            None,
        )
    ]
    for case in CASES:
        values = [found[n][case] for n in sizes]
        bound = RESTART_MS if case == "restart" else PAGE_MS
        shown = ", ".join(f"{n:,}: {v:.1f}" for n, v in zip(sizes, values, strict=True))
        figures.append(
            Figure(
                f"history_view_{case}_ms",
                f"{found[top][case]:.1f} at {top:,} runs ({shown}; fitted growth "
                f"∝ n^{growth(sizes, values):.2f})",
                f"≤ {bound:g} at {top:,}",
                found[top][case] <= bound,
            )
        )
        ratio = found[top][case] / max(found[low][case], 1e-3)
        figures.append(
            Figure(
                f"history_view_{case}_ratio",
                f"{ratio:.2f} ({top:,} runs / {low:,})",
                f"≤ {GROWTH_RATIO:g}",
                ratio <= GROWTH_RATIO,
            )
        )
    return figures
