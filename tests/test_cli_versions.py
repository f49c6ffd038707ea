"""The command line's versions: `rerender`, `versions`, `download --version`, `rerun`, on real
storage against the real stand-in, in-process and as child processes against `serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_cli import cli, run_json, use_storage
from tests.helpers_server import Server, env_for, vggt_serve
from tests.helpers_service import completed, running, service_on
from vggt_core import RenderStatus, RunVersion, VGGTSettings, read_glb
from vggt_core.cli import main


@pytest.fixture
def storage(tmp_path, monkeypatch, local_space) -> Path:
    return use_storage(tmp_path / "storage", local_space.url, monkeypatch)


def completed_run(root: Path, backend: str, images, **settings: object) -> str:
    """A completed run on `root`, made by a service that is closed afterwards."""
    with running(service_on(root, backend)) as service:
        return completed(service, images, **settings)


def test_rerender_versions_and_download_a_version(storage, local_space, images, capsys, tmp_path):
    run_id = completed_run(storage, local_space.url, images, prediction_mode="pointmap")
    folder = storage / "runs" / run_id
    scene = (folder / "scene.glb").read_bytes()

    code, version = run_json(capsys, "rerender", run_id, "--conf", "10", "--no-cameras", "--json")
    assert code == 0, version
    assert version["number"] == 2 and version["status"] == "completed"
    assert version["settings"]["confThreshold"] == 10
    assert version["settings"]["showCameras"] is False
    assert version["settings"]["predictionMode"] == "pointmap"  # not given: the newest's

    # Settings not given are the newest version's: the cameras stay off.
    assert main(["rerender", run_id, "--mask-white"]) == 0
    shown = capsys.readouterr().out
    assert "version    3 (completed, space)" in shown and "no cameras" in shown
    assert "mask white" in shown and "confidence 10" in shown

    code, listed = run_json(capsys, "versions", run_id, "--json")
    assert code == 0 and listed["runId"] == run_id
    assert [(v["number"], v["status"]) for v in listed["versions"]] == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
    ]
    assert main(["show", run_id]) == 0
    assert f"versions   3, newest rendered v3 (see: versions {run_id})" in capsys.readouterr().out
    assert main(["versions", run_id]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows] == ["v1", "v2", "v3"]
    assert "reconstruction" in rows[0] and "pointmap" in rows[0]

    out = tmp_path / "out"
    code, written = run_json(
        capsys, "download", run_id, "--out", str(out), "--version", "2", "--json"
    )
    assert code == 0 and written["files"] == [str(out / f"{run_id}_v2.glb")]
    v2 = out / f"{run_id}_v2.glb"
    assert v2.read_bytes() == (folder / "versions" / "v2.glb").read_bytes()
    assert read_glb(v2).point_count == listed["versions"][1]["points"]
    assert main(["download", run_id, "--out", str(out), "--version", "1"]) == 0
    assert (out / f"{run_id}.glb").read_bytes() == scene
    newest = tmp_path / "newest"
    assert main(["download", run_id, "--out", str(newest)]) == 0
    assert sorted(p.name for p in newest.iterdir()) == [f"{run_id}_v3.glb"]
    capsys.readouterr()
    assert main(["download", run_id, "--out", str(out), "--version", "9"]) == 1
    assert "no rendered version 9" in capsys.readouterr().err
    assert (folder / "scene.glb").read_bytes() == scene


def test_a_one_frame_rerender_from_another_process(
    storage, local_space, images, capsys, monkeypatch
):
    run_id = completed_run(storage, local_space.url, images)
    # The service that reconstructed is closed: the command resumes its session by its id.
    code, version = run_json(capsys, "rerender", run_id, "--frame", "0", "--json")
    assert code == 0 and version["status"] == "completed" and version["frame"] == 0, version
    # Past the window the Space keeps a session for, the core says why in plain words, never
    # the backend's raw dropdown error; exit 1.
    monkeypatch.setenv("VGGT_SESSION_KEEP_S", "0")
    code, version = run_json(capsys, "rerender", run_id, "--frame", "1", "--json")
    assert code == 1 and version["errorKind"] == "frame_filter", version
    assert "session" in version["error"] and "not in the list" not in version["error"]
    assert main(["rerender", run_id]) == 0  # all frames still work


@pytest.mark.parametrize(
    "argv",
    [
        ["rerender", "run_1700000000000_abcdef", "--conf", "101"],
        ["rerender", "run_1700000000000_abcdef", "--frame", "-1"],
        ["rerender", "run_1700000000000_abcdef", "--mode", "mesh"],
        ["rerender", "../etc"],
        ["versions", "not-a-run"],
        ["download", "run_1700000000000_abcdef", "--out", "x", "--version", "0"],
        ["rerun", "run_1700000000000_abcdef", "--conf", "x"],
    ],
)
def test_bad_usage_is_exit_2(storage, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert not (storage / "runs").exists() or not any((storage / "runs").iterdir())


def test_refused_rerenders_say_why_and_store_nothing(storage, local_space, images, capsys):
    run_id = completed_run(storage, local_space.url, images)
    metadata = (storage / "runs" / run_id / "metadata.json").read_bytes()
    assert main(["rerender", run_id, "--frame", "3"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["rerender", "run_1700000000000_abcdef"]) == 1
    assert "no such run" in capsys.readouterr().err.lower()
    assert (storage / "runs" / run_id / "metadata.json").read_bytes() == metadata

    with running(service_on(storage, local_space.url)) as service:
        never_started = service.create_run().run_id
    assert main(["rerender", never_started]) == 1
    assert "only a completed run" in capsys.readouterr().err
    assert main(["versions", never_started]) == 0
    assert "no version yet" in capsys.readouterr().err


def test_a_forgotten_run_points_to_rerun_which_links_to_it(storage, local_space, images, capsys):
    run_id = completed_run(storage, local_space.url, images, conf_threshold=40.0)
    with local_space.override(forget=True):
        assert main(["rerender", run_id, "--mask-black"]) == 1
    captured = capsys.readouterr()
    assert "no longer holds" in captured.out + captured.err
    assert f"Run `rerun {run_id} --mask-black` to run it again" in captured.err

    code, child = run_json(capsys, "rerun", run_id, "--mask-black", "--wait", "--json")
    assert code == 0, child
    assert child["status"] == "completed" and child["parentRunId"] == run_id
    assert child["settings"]["maskBlackBg"] is True
    assert child["settings"]["confThreshold"] == 40.0  # not given: the parent's
    assert main(["show", child["runId"]]) == 0
    assert f"parent     {run_id} (this run re-runs it)" in capsys.readouterr().out


def test_cancel_stops_a_rerender_another_process_holds(storage, local_space, images, capsys):
    run_id = completed_run(storage, local_space.url, images)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with running(service_on(storage, local_space.url)) as service:

            def hold(run) -> None:
                run.versions = run.all_versions
                run.versions.append(
                    RunVersion(
                        number=2,
                        status=RenderStatus.queued,
                        settings=VGGTSettings(),
                        owner_pid=other.pid,
                    )
                )

            service.store.update(run_id, hold)
        assert main(["rerender", run_id]) == 1
        assert "already re-rendering version 2" in capsys.readouterr().err
        assert main(["show", run_id]) == 0
        assert "rendering  v2 (queued)" in capsys.readouterr().out
        assert main(["cancel", run_id]) == 0
        assert f"Run {run_id}: cancelled its re-render (version 2)." in capsys.readouterr().out
    finally:
        other.kill()
        other.wait()
    code, listed = run_json(capsys, "versions", run_id, "--json")
    assert code == 0
    assert [v["status"] for v in listed["versions"]] == ["completed", "cancelled"]
    assert main(["cancel", run_id]) == 0  # nothing renders now: the run had already ended
    assert "already ended (completed)" in capsys.readouterr().out


# --- against a server, as child processes ---------------------------------------------------------


@pytest.fixture
def server(tmp_path, local_space) -> Iterator[Server]:
    """`python -m vggt_core serve` on its own storage."""
    server = vggt_serve(tmp_path, tmp_path / "served", local_space.url)
    try:
        yield server
    finally:
        server.stop()


def test_the_version_verbs_against_a_server(server, local_space, images, tmp_path):
    storage = server.storage
    run_id = completed_run(storage, local_space.url, images)
    env = env_for(tmp_path / "unused", local_space.url)

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--server", server.url, env=env, cwd=tmp_path)

    done = remote("rerender", run_id, "--conf", "15", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    version = json.loads(done.stdout)
    assert version["number"] == 2 and version["status"] == "completed"
    assert version["settings"]["confThreshold"] == 15

    listed = remote("versions", run_id, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["number"] for v in json.loads(listed.stdout)["versions"]] == [1, 2]

    out = tmp_path / "out"
    fetched = remote("download", run_id, "--out", str(out), "--version", "2")
    assert fetched.returncode == 0, fetched.stderr
    v2 = out / f"{run_id}_v2.glb"
    assert v2.read_bytes() == (storage / "runs" / run_id / "versions" / "v2.glb").read_bytes()

    queued = remote("rerender", run_id, "--frame", "7")
    assert queued.returncode == 1 and "out of range" in queued.stderr

    with local_space.override(forget=True):
        forgotten = remote("rerender", run_id, "--wait")
    assert forgotten.returncode == 1
    assert f"rerun {run_id}" in forgotten.stderr

    rerun = remote("rerun", run_id, "--mask-sky", "--wait", "--json")
    assert rerun.returncode == 0, rerun.stderr
    child = json.loads(rerun.stdout)
    assert child["parentRunId"] == run_id and child["settings"]["maskSky"] is True
    assert child["settings"]["confThreshold"] == 15  # the newest version's
