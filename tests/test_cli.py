"""The command line (`python -m vggt_core`, `vggt-studio`): its verbs on real storage against the
real stand-in, in-process where that is enough and as child processes where a process matters
(exit codes, a worker, a terminal)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers_cli import cli, run_json, use_storage
from tests.helpers_server import env_for
from tests.helpers_service import wait_for
from vggt_core import RunStatus, StudioService, VGGTSettings, load_config
from vggt_core.cli import main
from vggt_core.errors import SpaceError, explain_error, reads_unreachable
from vggt_core.heartbeat import live_workers
from vggt_core.local_space import write_sample_images

CLOSED = "http://127.0.0.1:9"


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    folder = tmp_path / "photos"
    write_sample_images(folder, count=3)
    (folder / "README.txt").write_text("not an image: a folder's other files are left out")
    return folder


@pytest.fixture
def storage(tmp_path, monkeypatch, local_space) -> Path:
    return use_storage(tmp_path / "storage", local_space.url, monkeypatch)


# --- the journey ---------------------------------------------------------------------------


def test_submit_wait_json_runs_it_here_when_nobody_runs_the_storage(
    tmp_path, local_space, photo_dir
):
    storage = tmp_path / "storage"
    env = env_for(storage, local_space.url)
    done = cli(
        "submit",
        str(photo_dir),
        "--conf",
        "45",
        "--mask-sky",
        "--wait",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "completed", run
    assert run["settings"]["confThreshold"] == 45 and run["settings"]["maskSky"] is True
    assert run["images"] == ["img_000.png", "img_001.png", "img_002.png"]
    assert "running it here" in done.stderr

    out = tmp_path / "out"
    got = cli("download", run["runId"], "--out", str(out), "--json", env=env, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    [path] = json.loads(got.stdout)["files"]
    stored = storage / "runs" / run["runId"] / "scene.glb"
    assert Path(path).read_bytes() == stored.read_bytes()
    assert live_workers(storage) == []  # a command's own run does not make it a worker


def test_submit_without_wait_is_picked_up_by_a_live_worker(tmp_path, local_space, photo_dir):
    storage = tmp_path / "storage"
    env = env_for(storage, local_space.url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "vggt_core", "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: live_workers(storage), what="the worker's heartbeat")
        done = cli("submit", str(photo_dir), "--json", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert run["status"] == "queued" and run["submittedAt"]
        assert f"pid {worker.pid}" in done.stderr
        waited = cli("wait", run["runId"], "--json", env=env, cwd=tmp_path)
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["status"] == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert live_workers(storage) == []


# --- the verbs in-process ------------------------------------------------------------------


def test_list_show_cancel_retry_delete(storage, photo_dir, capsys):
    service = StudioService(load_config(), workers=False)
    files = [(p.name, p.read_bytes()) for p in sorted(photo_dir.glob("*.png"))]
    waiting = service.submit(VGGTSettings(), [(f"kitchen_{n}", d) for n, d in files])
    other = service.create_run()

    code, page = run_json(capsys, "list", "--json")
    assert code == 0 and page["total"] == 2
    assert [r["runId"] for r in page["runs"]] == [other.run_id, waiting.run_id]
    code, page = run_json(capsys, "list", "--search", "KITCHEN", "--json")
    assert [r["runId"] for r in page["runs"]] == [waiting.run_id]
    code, page = run_json(capsys, "list", "--status", "cancelled", "--json")
    assert page == {"runs": [], "total": 0}

    code, cancelled = run_json(capsys, "cancel", waiting.run_id, "--json")
    assert code == 0 and cancelled["status"] == "cancelled"
    code, shown = run_json(capsys, "show", waiting.run_id, "--json")
    assert shown["status"] == "cancelled"
    assert main(["wait", waiting.run_id]) == 1  # a cancelled run is exit 1
    assert "cancelled" in capsys.readouterr().out

    code, retried = run_json(capsys, "retry", waiting.run_id, "--wait", "--json")
    assert code == 0 and retried["status"] == "completed" and retried["attempt"] == 2

    assert main(["delete", waiting.run_id]) == 2  # stdin is no terminal: --yes is needed
    assert "--yes" in capsys.readouterr().err
    assert service.get(waiting.run_id)
    code, deleted = run_json(capsys, "delete", waiting.run_id, "--yes", "--json")
    assert code == 0 and deleted == {"runId": waiting.run_id, "deleted": True}
    assert main(["show", waiting.run_id]) == 1
    assert "No such run" in capsys.readouterr().err
    service.close()


def test_a_failed_run_is_exit_1_and_an_unreachable_backend_exit_3(
    storage, photo_dir, capsys, local_space, monkeypatch
):
    with local_space.override(error="the model ran out of memory"):
        code = main(["submit", str(photo_dir), "--wait", "--json"])
    run = json.loads(capsys.readouterr().out)
    assert code == 1 and run["status"] == "failed"
    assert "ran out of memory" in run["error"]

    monkeypatch.setenv("VGGT_BACKEND", CLOSED)
    assert main(["check"]) == 3
    assert "Cannot reach the backend" in capsys.readouterr().out
    code = main(["submit", str(photo_dir), "--wait", "--json"])
    run = json.loads(capsys.readouterr().out)
    assert code == 3 and run["status"] == "failed", run
    monkeypatch.setenv("VGGT_BACKEND", local_space.url)
    assert main(["check"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "../../etc"],
        ["show", "run_1"],
        ["submit", "x.png", "--conf", "101"],
        ["submit", "x.png", "--mode", "mesh"],
        ["list", "--limit", "0"],
        ["list", "--status", "lost"],
        ["download", "run_1700000000000_abcdef"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_usage_is_exit_2(storage, argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert not storage.exists() or not any((storage / "runs").iterdir())


def test_bad_files_and_settings_are_exit_2_or_refused_whole(storage, photo_dir, tmp_path, capsys):
    assert main(["submit", str(tmp_path / "missing.png")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["submit", str(empty)]) == 2
    assert main(["submit", str(photo_dir / "README.txt"), str(photo_dir / "img_000.png")]) == 1
    assert "README.txt" in capsys.readouterr().err
    assert main(["worker", "--server", "http://127.0.0.1:1"]) == 2
    assert not (storage / "runs").exists() or not any((storage / "runs").iterdir())


def test_delete_asks_on_a_terminal(tmp_path, local_space):
    storage = tmp_path / "storage"
    service = StudioService(load_config({"VGGT_STORAGE_DIR": str(storage)}), workers=False)
    run = service.create_run()
    env = env_for(storage, local_space.url)
    for answer, code, exists in ((b"n\n", 1, True), (b"yes\n", 0, False)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, answer)
            done = cli("delete", run.run_id, env=env, cwd=tmp_path, stdin=follower)
        finally:
            os.close(follower)
            os.close(leader)
        assert done.returncode == code, done.stderr
        assert (storage / "runs" / run.run_id).exists() is exists
    service.close()


# --- reading a stored error back ----------------------------------------------------------


def unreachable_errors() -> list[SpaceError]:
    request = httpx.Request("GET", "http://example.invalid")

    class HfHubHTTPError(Exception):
        def __init__(self, code: int) -> None:
            super().__init__(f"HTTP {code}")
            self.response = httpx.Response(code, request=request)

    class RepositoryNotFoundError(Exception):
        pass

    raised: list[BaseException] = [
        httpx.ConnectError("[Errno 111] Connection refused", request=request),
        httpx.ConnectError("[Errno -2] Name or service not known", request=request),
        httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate", request=request),
        httpx.ProxyError("proxy refused", request=request),
        httpx.DecodingError("weird", request=request),
        ConnectionRefusedError(111, "Connection refused"),
        HfHubHTTPError(429),
        HfHubHTTPError(503),
        RepositoryNotFoundError("404"),
        ValueError("Could not find Space: a/b"),
    ]
    return [explain_error(e, backend="http://x", has_token=False) for e in raised]


def test_every_unreachable_error_reads_unreachable_and_no_other_does():
    errors = unreachable_errors()
    assert {e.kind for e in errors} == {"unreachable", "hub_busy"}
    for error in errors:
        assert reads_unreachable(str(error)), (error.kind, str(error))
    others = [
        explain_error(TimeoutError(), backend="http://x", has_token=False),
        explain_error(RuntimeError("boom"), backend="http://x", has_token=False),
        SpaceError("The Space reported an error: Cannot reach the backend", kind="app_error"),
    ]
    for error in others:
        assert not reads_unreachable(str(error)), str(error)
    assert not reads_unreachable(None) and not reads_unreachable("")
    assert RunStatus.failed  # the statuses the exit code reads are the core's


def test_wait_runs_a_waiting_run_itself_when_nobody_runs_the_storage(storage, photo_dir, capsys):
    service = StudioService(load_config(), workers=False)
    files = [(p.name, p.read_bytes()) for p in sorted(photo_dir.glob("*.png"))]
    waiting = service.submit(VGGTSettings(), files)  # recorded as waiting, nobody to run it
    assert service.live_workers() == []
    code = main(["wait", waiting.run_id, "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["status"] == "completed"
    assert "running it here" in captured.err
    service.close()
