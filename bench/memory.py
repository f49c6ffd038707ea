"""Resident memory of the `streamlit run app.py` process, idle and with 8 runs in flight."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from bench.common import Figure
from bench.overhead import new_run, product_service, sample_files, stand_in, temp_dir
from vggt_core import FINAL_STATUSES, RunStatus, StudioService
from vggt_core.local_space import StandInOptions, free_port

PROJECT = Path(__file__).resolve().parents[1]
TARGET_MB = 400.0
RUNS = 8
IMAGES = 4
IMAGE_SIZE = (518, 392)
SAMPLE_S = 0.05
MB = 1024 * 1024


def submitted_runs(service: StudioService, count: int, files: list[tuple[str, bytes]]) -> list[str]:
    """`count` runs started by a service without workers: left queued with submittedAt, as when
    the app stops before its workers took them, so the app's recover() sends them at its first
    script run."""
    ids = []
    for _ in range(count):
        run_id = new_run(service, files)
        service.start(run_id)  # sets submittedAt; with no workers, nothing here takes the run
        ids.append(run_id)
    return ids


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


def run(quick: bool) -> list[Figure]:
    """Idle RSS, then the peak RSS while the app's service has 8 runs in flight."""
    delay, settle_s = (1.5, 0.5) if quick else (5.0, 1.0)
    options = StandInOptions(delay=delay, concurrency_limit=RUNS)
    with (
        temp_dir("vggt-bench-memory-") as work,
        stand_in(options, work) as space,
    ):
        # No workers here: the runs wait on disk for the app's; this service only watches them.
        service = product_service(work / "storage", space.url, RUNS, run_workers=False)
        ids = submitted_runs(service, RUNS, sample_files(work / "images", IMAGES, IMAGE_SIZE))
        with streamlit_app(work / "storage", space.url) as (process, url):
            time.sleep(settle_s)  # let the server settle after its health check
            idle_mb = rss_mb(process.pid)
            browser = Browser(url)
            peak_mb, in_flight_max, samples = idle_mb, 0, 0
            start = time.monotonic()
            browser.open()
            try:
                while time.monotonic() - start < 120:
                    peak_mb = max(peak_mb, rss_mb(process.pid))
                    samples += 1
                    statuses = [service.get(run_id).status for run_id in ids]
                    in_flight_max = max(
                        in_flight_max,
                        sum(
                            s not in FINAL_STATUSES and s is not RunStatus.queued for s in statuses
                        ),
                    )
                    if all(s in FINAL_STATUSES for s in statuses):
                        break
                    time.sleep(SAMPLE_S)
                else:
                    raise TimeoutError("the runs did not finish within 120 s")
                time.sleep(settle_s)
                settled_mb = rss_mb(process.pid)
            finally:
                browser.close()
            final = [service.get(run_id) for run_id in ids]
    failed = [r for r in final if r.status is not RunStatus.completed]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) did not complete: {failed[0].error}")
    setup = f"{RUNS} runs × {IMAGES} images, model delay {delay:g} s, {samples} samples"
    return [
        Figure(
            "memory_peak_rss_mb (streamlit process, runs in flight)",
            f"{peak_mb:.0f} ({setup}; up to {in_flight_max} seen in flight at once)",
            f"≤ {TARGET_MB:g}",
            peak_mb <= TARGET_MB,
        ),
        Figure(
            "memory_idle_rss_mb (started, before the first page view)", f"{idle_mb:.0f}", "", None
        ),
        Figure("memory_settled_rss_mb (page viewed, runs done)", f"{settled_mb:.0f}", "", None),
    ]
