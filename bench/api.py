"""The REST API's overhead: a run through HTTP (create, upload, process, poll) over the same run
through the service in-process (create, add images, start, poll), on one service and one stand-in.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from bench.common import Figure
from bench.overhead import sample_files, stand_in, temp_dir
from vggt_core import StudioService, VGGTSettings, load_config
from vggt_core.api import create_api_app
from vggt_core.local_space import StandInOptions

TARGET = 1.1
# Both sides look at the run as often: the ratio shows what HTTP adds, not a polling rhythm.
POLL_S = 0.05
TIMEOUT_S = 120


def _until_final(read: Callable[[], str]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        status = read()
        if status in ("completed", "failed", "cancelled"):
            if status != "completed":
                raise RuntimeError(f"a benchmark run ended {status}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError("a benchmark run did not end in time")
        time.sleep(POLL_S)


def service_run(service: StudioService, files: list[tuple[str, bytes]]) -> float:
    """Seconds for a run through the service in-process, as the pages drive it."""
    start = time.perf_counter()
    run = service.create_run(VGGTSettings())
    service.add_images(run.run_id, files)
    service.start(run.run_id)
    _until_final(lambda: service.get(run.run_id).status.value)
    return time.perf_counter() - start


def api_run(client: httpx.Client, files: list[tuple[str, bytes]]) -> float:
    """Seconds for the same run through the REST API, as a script drives it."""
    start = time.perf_counter()
    run_id = client.post("/api/runs", json={"settings": {}}).json()["runId"]
    upload = [("images", (name, data, "image/png")) for name, data in files]
    client.post(f"/api/runs/{run_id}/images", files=upload).raise_for_status()
    client.post(f"/api/runs/{run_id}/process").raise_for_status()
    _until_final(lambda: client.get(f"/api/runs/{run_id}").json()["status"])
    return time.perf_counter() - start


@contextmanager
def serving(service: StudioService) -> Iterator[str]:
    """The API on a free loopback port, served by uvicorn in a thread of this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_api_app(service, close_on_shutdown=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run(quick: bool) -> list[Figure]:
    """Interleave API and in-process runs (A B A B …) on one service; ratio of medians."""
    count = 5 if quick else 20
    with (
        temp_dir("vggt-bench-api-") as work,
        stand_in(StandInOptions(delay=0), work) as space,
    ):
        files = sample_files(work / "images")
        config = load_config(
            {
                "VGGT_BACKEND": space.url,
                "VGGT_STORAGE_DIR": str(work / "storage"),
                "VGGT_MAX_CONCURRENT_RUNS": "1",
            }
        )
        service = StudioService(config, sweep_interval_s=None)
        try:
            with serving(service) as url, httpx.Client(base_url=url, timeout=60) as client:
                # One untimed round of each: imports, first connections, the page cache.
                service_run(service, files)
                api_run(client, files)
                through_api, in_process = [], []
                for _ in range(count):
                    through_api.append(api_run(client, files))
                    in_process.append(service_run(service, files))
        finally:
            service.close()
    ratio = statistics.median(through_api) / statistics.median(in_process)
    label = f"{count} runs each, interleaved, {len(files)} images"
    return [
        Figure(
            "api_overhead_ratio (REST API median / in-process median)",
            f"{ratio:.3f} ({label})",
            f"≤ {TARGET}",
            ratio <= TARGET,
        ),
        Figure("api_run_median_s", f"{statistics.median(through_api):.3f}", "", None),
        Figure("api_in_process_median_s", f"{statistics.median(in_process):.3f}", "", None),
    ]
