"""The Reconstruct click with 10 phone photos: time until the page shows "Uploading", with
10,000 runs stored and with none (AppTest of app.py, the real uploader and service)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from bench.common import Figure
from bench.history import (
    APP,
    app_environment,
    generate_store,
    quiet_streamlit,
    served_navigation,
)
from bench.overhead import stand_in, temp_dir
from bench.upload_prep import PHONE_SIZE, photographic_jpeg
from vggt_core import RunStatus, StudioService, load_config
from vggt_core.local_space import StandInOptions
from vggt_core.shared import process_services

NEW_RUN_PAGE = "pages/new_run.py"
PHOTOS = 10
STORED = 10_000
TARGET_S = 0.5
TARGET_RATIO = 1.2
# A run that still decodes or sends photos; every run starts at once (a worker each) so none
# waits for a worker and prepares its photos later, during another click.
WARMING = (RunStatus.queued, RunStatus.uploading)
WORKERS = "16"


def _shows_uploading(at: AppTest) -> bool:
    """Whether any element on the page says "Uploading" (the run's status badge)."""
    found = False

    def walk(node: Any) -> None:
        nonlocal found
        proto = getattr(node, "proto", None)
        if proto is not None and "Uploading" in str(proto):
            found = True
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def click_seconds(storage: Path, backend: str, photos: list[tuple[str, bytes, str]]) -> float:
    """Seconds from the Reconstruct click to the first page that shows the run "Uploading"."""
    with app_environment(storage, backend, VGGT_MAX_CONCURRENT_RUNS=WORKERS):
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        at.switch_page(NEW_RUN_PAGE)
        at.run()
        at.file_uploader[0].set_value(photos)
        at.run()  # the files arrive: checked, thumbnails drawn (before the click, untimed)
        if at.exception:
            raise RuntimeError(f"the New run page raised: {at.exception[0].message}")
        (reconstruct,) = [b for b in at.button if b.label == "Reconstruct"]
        reconstruct.click()
        start = time.perf_counter()
        at.run()
        deadline = start + 60
        while not _shows_uploading(at):
            if time.perf_counter() > deadline:
                raise RuntimeError("the page never showed the run uploading")
            at.run()
        elapsed = time.perf_counter() - start
        if at.exception:
            raise RuntimeError(f"the New run page raised: {at.exception[0].message}")
        _wait_uploaded(process_services().get(load_config()))
    return elapsed


def _wait_uploaded(service: StudioService, timeout: float = 120.0) -> None:
    """Wait until every run in flight has sent its photos, so no photo is decoded in the
    background while the next click is measured (in either store: one process serves both)."""
    deadline = time.monotonic() + timeout
    while any(r.status in WARMING for r in service.active_runs()):
        if time.monotonic() > deadline:
            raise RuntimeError("the runs never finished uploading")
        time.sleep(0.05)


def run(quick: bool) -> list[Figure]:
    """Click to "Uploading" with 10 photos of 12 MP: 10,000 runs stored vs an empty store."""
    repeats = 5 if quick else 8  # the first render after the click may still say "Queued"
    with temp_dir("bench-click-") as work:
        photos = []
        for i in range(PHOTOS):
            path = work / f"IMG_{i:04d}.jpg"
            photographic_jpeg(path, *PHONE_SIZE, seed=i)
            photos.append((path.name, path.read_bytes(), "image/jpeg"))
        megabytes = sum(len(d) for _, d, _ in photos) / 1e6
        big, empty = work / "big", work / "empty"
        generate_store(big, STORED)
        empty.mkdir()
        # A model delay long enough that no run finishes while the next one is measured.
        with stand_in(StandInOptions(delay=30.0), work) as space:
            try:
                with served_navigation(), quiet_streamlit():
                    click_seconds(empty, space.url, photos)  # untimed: imports, caches, index
                    click_seconds(big, space.url, photos)
                    times_big, times_empty = [], []
                    for _ in range(repeats):
                        times_big.append(click_seconds(big, space.url, photos))
                        times_empty.append(click_seconds(empty, space.url, photos))
            finally:
                # The runs still in flight are interrupted before their storage goes.
                process_services().close(interrupt=True)
    b, e = statistics.median(times_big), statistics.median(times_empty)
    what = f"{PHOTOS} JPEGs {PHONE_SIZE[0]}×{PHONE_SIZE[1]} ({megabytes:.0f} MB)"
    return [
        Figure(
            f"click_to_uploading_s ({what}, {STORED:,} runs stored, median of {repeats})",
            f"{b:.3f}",
            f"≤ {TARGET_S}",
            b <= TARGET_S,
        ),
        Figure(
            f"click_to_uploading_ratio ({STORED:,} runs stored / empty store)",
            f"{b / e:.2f} ({b:.3f} s / {e:.3f} s, interleaved)",
            f"≤ {TARGET_RATIO}",
            b / e <= TARGET_RATIO,
        ),
    ]
