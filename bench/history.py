"""History at scale: listing, filtering, searching and counting a big store through the service,
and the History page's cost."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from bench.common import Figure
from bench.overhead import product_service, temp_dir
from vggt_core import (
    Artifacts,
    RunStatus,
    StudioService,
    UploadStats,
    VGGTRun,
    VGGTSettings,
)

APP = Path(__file__).resolve().parents[1] / "app.py"
HISTORY_PAGE = "pages/history.py"
DUMMY_BACKEND = "http://127.0.0.1:9"  # never called: the History page only reads the store
# The store's layout, which the generator writes straight to: <root>/runs/<run id>/metadata.json
# and images/. generate_store checks through the service that every run it wrote is listed.
RUNS_DIR = "runs"
FIRST_PAGE_MS = 50.0
FILTERED_MS = 300.0
PAGE_RATIO = 1.5
SMALL_STORE = 10
REAL_IMAGE_RUNS = 5
SEARCH = "kitchen"  # in about 1 run in 100
FILTER_STATUS = RunStatus.failed
# No active status: the app's recover() at start would otherwise change the store under the
# measurement (fail "interrupted" runs, resubmit queued ones to the dummy backend).
STATUS_WEIGHTS = {
    RunStatus.completed: 70,
    RunStatus.failed: 15,
    RunStatus.cancelled: 10,
    RunStatus.queued: 5,
}
SCENES = ("garden", "statue", "facade", "desk", "bridge", "car", "tree", "room", "shelf")


def _fake_run(rng: random.Random, when: datetime, suffix: str) -> VGGTRun:
    """A plausible finished (or never submitted) run requested at `when`."""
    status = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
    scene = SEARCH if rng.random() < 0.01 else rng.choice(SCENES)
    images = [f"{scene}_{k:03d}.jpg" for k in range(rng.randint(2, 40))]
    run = VGGTRun(
        run_id=f"run_{int(when.timestamp() * 1000)}_{suffix}",
        status=status,
        settings=VGGTSettings(conf_threshold=rng.choice([25.0, 50.0, 75.0])),
        images=images,
        requested_at=when,
        backend="facebook/vggt",
    )
    if status is RunStatus.queued:
        return run
    run.submitted_at = run.started_at = when + timedelta(seconds=1)
    run.finished_at = when + timedelta(seconds=rng.uniform(20, 200))
    run.upload = UploadStats(
        bytes_sent=len(images) * 300_000, bytes_original=len(images) * 4_000_000
    )
    if status is RunStatus.completed:
        run.artifacts = Artifacts(glb="scene.glb")
    elif status is RunStatus.failed:
        run.error = (
            "The Space's GPU quota for anonymous users is used up; add an HF token or retry."
        )
    return run


def listing_service(root: Path) -> StudioService:
    """A fresh service on `root` that lists runs and runs none (no workers), as a page reads it."""
    return product_service(root, DUMMY_BACKEND, run_workers=False)


def generate_store(root: Path, count: int, seed: int = 0) -> None:
    """Write `count` runs' metadata.json straight to disk (a few with real images).

    A data generator, not a use of the product: runs made through the service would all be new
    and unfinished; these are months of finished ones. Each file's mtime is its run's time, as
    for a store that grew over months: files written a moment ago would be re-read by the index on
    every call (they may still change), unlike old ones.
    """
    rng = random.Random(seed)
    service = listing_service(root)  # makes the storage folder
    runs_dir = service.storage_root / RUNS_DIR
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    runs = []
    for i in range(count):
        when = now - timedelta(minutes=7 * (count - i), seconds=rng.randint(0, 59))
        runs.append(_fake_run(rng, when, "".join(rng.choices(alphabet, k=6))))

    def write(index: int) -> None:
        run = runs[index]
        folder = runs_dir / run.run_id
        os.mkdir(folder)
        os.mkdir(folder / "images")
        meta = folder / "metadata.json"
        meta.write_text(json.dumps(run.to_json_dict(), indent=2, ensure_ascii=False))
        if index >= count - REAL_IMAGE_RUNS:
            for k, name in enumerate(run.images[:3]):
                Image.new("RGB", (64, 48), (40 * k, 120, 200)).save(folder / "images" / name, "PNG")
        stamp = run.requested_at.timestamp()
        os.utime(meta, (stamp, stamp))

    # The file system's latency, not the CPU, bounds this: a few threads overlap the waits.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(count)))
    listed = service.run_count()
    if listed != count:
        raise RuntimeError(f"the service lists {listed} of the {count} runs generated in {root}")


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _shown_ms(ms: float) -> str:
    """Milliseconds to one decimal, or two below 1 ms (a cached count takes microseconds)."""
    return f"{ms:.1f}" if ms >= 0.95 else f"{ms:.2f}"


def listing_times(root: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """(cold, warm median) ms of the first page, a status-filtered page, a text search and the
    status counts.

    Cold: the first call on a fresh `StudioService(config, workers=False)` with no index file;
    warm: later calls on it.
    """
    queries: dict[str, Callable[[StudioService], object]] = {
        "first_page": lambda s: s.list_runs(limit=50),
        "filtered": lambda s: s.list_runs(status=FILTER_STATUS, limit=50),
        "search": lambda s: s.list_runs(query=SEARCH, limit=50),
        "counts": lambda s: s.counts(),
    }
    result = {}
    for name, query in queries.items():
        for index_file in (".index.sqlite", ".index.sqlite-wal", ".index.sqlite-shm"):
            (root / index_file).unlink(missing_ok=True)
        service = listing_service(root)
        try:
            cold = _ms(lambda q=query, s=service: q(s))
            warm = statistics.median(_ms(lambda q=query, s=service: q(s)) for _ in range(repeats))
        finally:
            service.close()
        result[name] = (cold, warm)
    return result


@contextlib.contextmanager
def app_environment(storage: Path, backend: str = DUMMY_BACKEND, **extra: str) -> Iterator[None]:
    """Point the app at `storage` and `backend` (a dummy by default), with any `extra`
    settings, through the environment, then restore it."""
    wanted: dict[str, str | None] = {
        "VGGT_STORAGE_DIR": str(storage),
        "VGGT_BACKEND": backend,
        "HF_TOKEN": None,
        **extra,
    }
    saved = {k: os.environ.get(k) for k in wanted}
    try:
        for key, value in wanted.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def served_navigation() -> contextlib.AbstractContextManager[None]:
    """Run every AppTest run as a long-running server does once app.py called st.navigation."""
    from ui.entrypoint import navigation_assumed

    return navigation_assumed()


@contextlib.contextmanager
def quiet_streamlit() -> Iterator[None]:
    """Drop Streamlit's "missing ScriptRunContext" warnings (AppTest outside `streamlit run`)."""
    # A filter, not a level: Streamlit resets its loggers' levels at every script run.
    logger = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")

    def keep(record: logging.LogRecord) -> bool:
        return "missing ScriptRunContext" not in str(record.msg)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def page_seconds(storage: Path) -> float:
    """Seconds for one AppTest run of the History page (app.py run first, untimed)."""
    from streamlit.testing.v1 import AppTest

    with app_environment(storage):
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        if at.exception:
            raise RuntimeError(f"app.py raised: {at.exception[0].message}")
        at.switch_page(HISTORY_PAGE)
        start = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"the History page raised: {at.exception[0].message}")
    if not at.dataframe:
        raise RuntimeError("the History page showed no runs table")
    return elapsed


def close_app_services() -> None:
    """Close the services app.py made in this process (one per storage folder, workers and a
    sweep every 10 s): AppTest runs the app here, and the folders are about to be deleted."""
    from vggt_core.shared import process_services

    process_services().close(interrupt=False)


def page_ratio(big: Path, small: Path, repeats: int) -> tuple[float, float, float]:
    """(median big-store seconds, median small-store seconds, ratio), runs interleaved."""
    try:
        with served_navigation(), quiet_streamlit():
            page_seconds(big)  # untimed: imports, the app's recover(), the index, caches
            page_seconds(small)
            times_big, times_small = [], []
            for _ in range(repeats):
                times_big.append(page_seconds(big))
                times_small.append(page_seconds(small))
    finally:
        close_app_services()
    b, s = statistics.median(times_big), statistics.median(times_small)
    return b, s, b / s


def run(quick: bool) -> list[Figure]:
    """Listing figures on a store of 10,000 runs (quick: 2,000) and the History page ratio."""
    count = 2_000 if quick else 10_000
    repeats = 3 if quick else 5
    figures: list[Figure] = []
    with temp_dir("vggt-bench-history-") as work:
        start = time.perf_counter()
        generate_store(work / "big", count)
        generate_store(work / "small", SMALL_STORE, seed=1)
        made_s = time.perf_counter() - start
        figures.append(
            Figure(
                "history_store",
                f"{count:,} runs (and {SMALL_STORE}) generated in {made_s:.1f} s",
                "",
                None,
            )
        )
        times = listing_times(work / "big", repeats=7)
        targets = {"first_page": FIRST_PAGE_MS, "filtered": FILTERED_MS, "search": FILTERED_MS}
        labels = {
            "first_page": "first page of 50",
            "filtered": f"status={FILTER_STATUS.value} page",
            "search": f"text search '{SEARCH}'",
            "counts": "info: runs per status, every page's sidebar",
        }
        for name, (cold, warm) in times.items():
            target = targets.get(name)
            figures.append(
                Figure(
                    f"history_{name}_ms (warm; {labels[name]}, {count:,} runs)",
                    f"{_shown_ms(warm)} (cold: {_shown_ms(cold)}, fresh service, no index file)",
                    f"< {target:g}, warm" if target is not None else "",
                    warm < target if target is not None else None,
                )
            )
        service = listing_service(work / "big")
        try:
            usage_ms = _ms(service.disk_usage)
        finally:
            service.close()
        figures.append(
            Figure(
                f"history_disk_usage_ms (info: StudioService.disk_usage, {count:,} runs; the "
                "sidebar recounts it every 10 s)",
                f"{usage_ms:.0f}",
                "",
                None,
            )
        )
        if APP.is_file():
            big_s, small_s, ratio = page_ratio(work / "big", work / "small", repeats)
            figures.append(
                Figure(
                    f"history_page_ratio (AppTest History page, {count:,} runs / {SMALL_STORE})",
                    f"{ratio:.2f} ({big_s:.3f} s / {small_s:.3f} s, median of {repeats} each, "
                    "interleaved)",
                    f"≤ {PAGE_RATIO}",
                    ratio <= PAGE_RATIO,
                )
            )
        else:
            figures.append(
                Figure("history_page_ratio", "skipped: app.py is not there yet", "", None)
            )
    return figures
