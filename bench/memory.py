"""Resident memory of the `streamlit run app.py` process, idle and with 8 runs of 4 phone photos
(12 MP JPEGs) uploaded through a real browser and in flight, beside three open 2M-point previews."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil

from bench.common import Figure
from bench.overhead import product_service, stand_in, temp_dir
from vggt_core import FINAL_STATUSES, RunStatus, StudioService, VGGTRun
from vggt_core.local_space import StandInOptions, free_port

PROJECT = Path(__file__).resolve().parents[1]
TARGET_MB = 400.0
RUNS = 8
IMAGES = 4
PREVIEWS = 3
PREVIEW_POINTS = 2_000_000
SAMPLE_S = 0.05
UPLOADER_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 120_000
MB = 1024 * 1024


@contextlib.contextmanager
def streamlit_app(storage: Path, backend: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`streamlit run app.py` headless on a free port (its own process group), stopped after."""
    port = free_port()
    env = {
        **os.environ,
        "VGGT_STORAGE_DIR": str(storage),
        "VGGT_BACKEND": backend,
        "VGGT_MAX_CONCURRENT_RUNS": str(RUNS),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(PROJECT),
    }
    env.pop("HF_TOKEN", None)
    argv = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    argv += ["--server.port", str(port), "--browser.gatherUsageStats", "false"]
    log = storage.parent / "streamlit.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log)
        yield process, url
    finally:
        stop_group(process)


def wait_healthy(
    process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60
) -> None:
    """Return once `/_stcore/health` answers ok; raise with the log if the process exits first."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited {process.returncode}: {log.read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/_stcore/health").text.strip() == "ok":
                    return
            time.sleep(0.1)
    raise TimeoutError("streamlit did not answer /_stcore/health in time")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group this benchmark started: TERM, then KILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class Browser:
    """A page view without a browser: GET / and the health check, then the app's websocket
    session asking for a script run, as the browser's first message does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._session, daemon=True)

    def open(self) -> None:
        """Load the page (the static part) and start the session (the script run)."""
        with httpx.Client(timeout=10) as client:
            client.get(f"{self.url}/").raise_for_status()
            client.get(f"{self.url}/_stcore/health").raise_for_status()
        self._thread.start()

    def _session(self) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ClientState_pb2 import ClientState
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from websockets.sync.client import connect

        ws_url = self.url.replace("http://", "ws://") + "/_stcore/stream"
        with connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:  # type: ignore[list-item]
            ws.send(BackMsg(rerun_script=ClientState(query_string="")).SerializeToString())
            while not self._stop.is_set():
                try:
                    data = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                msg = ForwardMsg()
                msg.ParseFromString(data)
                if msg.WhichOneof("type") == "script_finished":
                    self.finished.set()

    def close(self) -> None:
        """End the session."""
        self._stop.set()
        self._thread.join(5)


def rss_mb(pid: int) -> float:
    """Resident memory of this process alone (not its children), in MiB."""
    return psutil.Process(pid).memory_info().rss / MB


class Sampler:
    """The peak RSS of one process, sampled every SAMPLE_S in a thread until stopped."""

    def __init__(self, pid: int, in_flight: Callable[[], int]) -> None:
        self.pid = pid
        self.peak_mb = rss_mb(pid)
        self.samples = 0
        self.in_flight_max = 0
        self._in_flight = in_flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
                self.samples += 1
            if self.samples % 10 == 0:  # every 0.5 s: how many runs are uploading or processing
                with contextlib.suppress(Exception):
                    self.in_flight_max = max(self.in_flight_max, self._in_flight())
            self._stop.wait(SAMPLE_S)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(5)


def completed_previews(service: StudioService, count: int) -> list[str]:
    """`count` completed runs, each with a 2M-point GLB shaped like VGGT's (a data generator,
    written straight to disk as history's is)."""
    from bench.preview import build_vggt_like_glb

    ids = []
    for _ in range(count):
        run_id = service.create_run().run_id

        def completed(run: VGGTRun) -> None:
            run.status = RunStatus.completed
            run.images = ["a.jpg"]
            run.submitted_at = run.started_at = run.finished_at = run.requested_at

        service.store.update(run_id, completed)
        build_vggt_like_glb(service.store.artifact_path(run_id, "glb"), PREVIEW_POINTS)
        ids.append(run_id)
    return ids


def phone_photos(folder: Path, count: int) -> list[Path]:
    """`count` different 12 MP JPEGs with a photographic texture (3-5 MB each)."""
    from bench.upload_prep import PHONE_SIZE, photographic_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        photographic_jpeg(path, *PHONE_SIZE, seed=100 + i)
        paths.append(path)
    return paths


def run(quick: bool) -> list[Figure]:
    """Idle RSS, then the peak RSS while 3 previews are open and 8 runs uploaded in a browser
    are in flight."""
    from playwright.sync_api import expect, sync_playwright

    delay, settle_s = (60.0, 0.5) if quick else (60.0, 1.0)
    options = StandInOptions(delay=delay, concurrency_limit=RUNS)
    with (
        temp_dir("vggt-bench-memory-") as work,
        stand_in(options, work) as space,
    ):
        photos = phone_photos(work / "photos", RUNS * IMAGES)
        megabytes = sum(p.stat().st_size for p in photos) / 1e6
        # No workers here: this service only writes the previews' runs and watches the others.
        service = product_service(work / "storage", space.url, RUNS, run_workers=False)
        previews = completed_previews(service, PREVIEWS)
        with (
            streamlit_app(work / "storage", space.url) as (process, url),
            sync_playwright() as playwright,
        ):
            time.sleep(settle_s)  # let the server settle after its health check
            idle_mb = rss_mb(process.pid)
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
            )

            def in_flight() -> int:
                moving = [r for r in service.active_runs() if r.status is not RunStatus.queued]
                return len(moving)

            sampler = Sampler(process.pid, in_flight)
            try:
                uploads = browser.new_page()
                uploads.goto(f"{url}/")
                before = set(service.store.run_ids())
                for k in range(RUNS):
                    uploads.locator(UPLOADER_INPUT).set_input_files(
                        photos[k * IMAGES : (k + 1) * IMAGES]
                    )
                    expect(uploads.get_by_text(f"{IMAGES} images ready")).to_be_visible(
                        timeout=WAIT_MS
                    )
                    uploads.get_by_role("button", name="Reconstruct").click()
                    deadline = time.monotonic() + WAIT_MS / 1000
                    while len(set(service.store.run_ids()) - before) <= k:
                        if time.monotonic() > deadline:
                            raise TimeoutError("Reconstruct made no run")
                        time.sleep(0.1)
                    # The page hands out a fresh, empty uploader once the run started.
                    expect(uploads.get_by_text("images a run,")).to_be_visible(timeout=WAIT_MS)
                ids = sorted(set(service.store.run_ids()) - before)
                # The previews open while the runs are in flight (opened first, their software
                # WebGL would slow the uploads down on a small machine).
                for run_id in previews:
                    page = browser.new_page()
                    page.goto(f"{url}/history?run={run_id}")
                    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=WAIT_MS)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    statuses = [service.get(run_id).status for run_id in ids]
                    if all(s in FINAL_STATUSES for s in statuses):
                        break
                    time.sleep(0.2)
                else:
                    raise TimeoutError("the runs did not finish within 300 s")
                time.sleep(settle_s)
                settled_mb = rss_mb(process.pid)
            finally:
                sampler.stop()
                browser.close()
            final = [service.get(run_id) for run_id in ids]
    failed = [r for r in final if r.status is not RunStatus.completed]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) did not complete: {failed[0].error}")
    setup = (
        f"{len(ids)} runs × {IMAGES} JPEGs 4032×3024 ({megabytes:.0f} MB) uploaded in chromium, "
        f"{PREVIEWS} previews of {PREVIEW_POINTS:,} points open, model delay {delay:g} s, "
        f"{sampler.samples} samples"
    )
    return [
        Figure(
            "memory_peak_rss_mb (streamlit process)",
            f"{sampler.peak_mb:.0f} ({setup}; up to {sampler.in_flight_max} seen in flight)",
            f"≤ {TARGET_MB:g}",
            sampler.peak_mb <= TARGET_MB,
        ),
        Figure(
            "memory_idle_rss_mb (started, before the first page view)", f"{idle_mb:.0f}", "", None
        ),
        Figure("memory_settled_rss_mb (pages open, runs done)", f"{settled_mb:.0f}", "", None),
    ]
