"""The REST API served for real: by `streamlit run app.py` beside the pages, and by
`python -m vggt_core serve` alone, each against a stand-in Space in a child process, driven with
httpx and by the command line's `--server`. Also: stopping the app ends its running run
interrupted at once, keeps the waiting one queued, and the restarted app runs it unvisited."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers_server import Server, env_for, streamlit_run, vggt_serve
from vggt_core.heartbeat import live_workers
from vggt_core.local_space import (
    LocalSpaceProcess,
    StandInOptions,
    spawn_local_space,
    write_sample_images,
)

MODEL_DELAY_S = 0.3


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Iterator[LocalSpaceProcess]:
    handle = spawn_local_space(
        StandInOptions(delay=MODEL_DELAY_S, progress_steps=2, concurrency_limit=4),
        workdir=tmp_path_factory.mktemp("api_server_space"),
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_sample_images(tmp_path_factory.mktemp("api_server_photos"), count=3)


@pytest.fixture(scope="module", params=["streamlit run app.py", "python -m vggt_core serve"])
def server(request, stand_in, tmp_path_factory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("api_server")
    launch = streamlit_run if request.param.startswith("streamlit") else vggt_serve
    server = launch(work, work / "storage", stand_in.url)
    try:
        yield server
    finally:
        server.stop()


def poll(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is still {run['status']}"
        time.sleep(0.1)


def create_with_photos(client: httpx.Client, photos: list[Path]) -> str:
    created = client.post("/api/runs", json={"settings": {"confThreshold": 40}})
    assert created.status_code == 201, created.text
    run_id = created.json()["runId"]
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in photos]
    uploaded = client.post(f"/api/runs/{run_id}/images", files=files)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["imagesUploaded"] == len(photos)
    return run_id


def test_the_earlier_systems_journey_over_http(server, photos):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        run_id = create_with_photos(client, photos)
        processing = client.post(f"/api/runs/{run_id}/process")
        assert processing.status_code == 202
        assert processing.json() == {"runId": run_id, "status": "processing"}
        done = poll(client, run_id, {"completed", "failed", "cancelled"})
        assert done["status"] == "completed", done["error"]
        # httpx asks for gzip: the file still comes whole, with its length and ranges.
        glb = client.get(done["artifacts"]["glb"])
        assert glb.status_code == 200 and "content-encoding" not in glb.headers
        stored = (server.storage / "runs" / run_id / "scene.glb").read_bytes()
        assert glb.content == stored
        assert glb.headers["content-length"] == str(len(stored))
        tail = client.get(done["artifacts"]["glb"], headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == stored[-100:]
    # One process, one service with workers: one heartbeat, the server's.
    assert [w.pid for w in live_workers(server.storage)] == [server.process.pid]


def test_the_command_line_against_the_server(server, photos, tmp_path):
    env = env_for(tmp_path / "unused-storage", "http://127.0.0.1:9")
    argv = [sys.executable, "-m", "vggt_core"]
    done = subprocess.run(
        [*argv, "submit", *map(str, photos), "--wait", "--json", "--server", server.url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "completed"
    got = subprocess.run(
        [*argv, "download", run["runId"], "--out", str(tmp_path / "out"), "--server", server.url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    stored = (server.storage / "runs" / run["runId"] / "scene.glb").read_bytes()
    assert (tmp_path / "out" / f"{run['runId']}.glb").read_bytes() == stored
    assert not (tmp_path / "unused-storage").exists()


def test_stopping_the_app_interrupts_the_running_run_and_keeps_the_waiting_one(
    stand_in, photos, tmp_path
):
    stand_in.set_options(delay=60.0)
    storage = tmp_path / "storage"
    try:
        app = streamlit_run(tmp_path, storage, stand_in.url, VGGT_MAX_CONCURRENT_RUNS="1")
        try:
            with httpx.Client(base_url=app.url, timeout=30) as client:
                running, waiting = (create_with_photos(client, photos) for _ in range(2))
                for run_id in (running, waiting):
                    assert client.post(f"/api/runs/{run_id}/process").status_code == 202
                poll(client, running, {"processing"})
        finally:
            # uvicorn shuts down gracefully, then re-raises the signal: the code is -SIGTERM.
            assert app.stop() in (0, -signal.SIGTERM), app.log_tail()
        stopped = json.loads((storage / "runs" / running / "metadata.json").read_text())
        assert stopped["status"] == "failed" and stopped["error"].startswith("Interrupted")
        queued = json.loads((storage / "runs" / waiting / "metadata.json").read_text())
        assert queued["status"] == "queued" and queued["submittedAt"]
        assert live_workers(storage) == []
        stand_in.set_options(delay=MODEL_DELAY_S)
        again = streamlit_run(tmp_path, storage, stand_in.url)
        try:
            with httpx.Client(base_url=again.url, timeout=30) as client:
                # Nobody opened a page: the server's start took the waiting run up.
                done = poll(client, waiting, {"completed", "failed", "cancelled"})
                assert done["status"] == "completed", done["error"]
        finally:
            again.stop()
    finally:
        stand_in.set_options(delay=MODEL_DELAY_S)
