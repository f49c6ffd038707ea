"""Versions over the REST API (real ASGI app, real stand-in, real storage): re-render, list,
download a version's GLB, cancel a re-render, and re-run a run the backend forgot."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.helpers_http import API_BASE_URL, assert_error, client_for
from tests.helpers_service import completed, service_on, wait_for
from vggt_core import RenderStatus, RunVersion, StudioService, VGGTSettings, read_glb
from vggt_core.api import openapi_document


@pytest.fixture
def service(tmp_path: Path, local_space) -> Iterator[StudioService]:
    service = service_on(tmp_path / "storage", local_space.url)
    yield service
    service.close()


@pytest.fixture
def api(service: StudioService) -> Iterator[TestClient]:
    with client_for(service) as client:
        yield client


def rendered(api: TestClient, run_id: str, number: int) -> dict:
    """Poll the versions until `number` has ended; its view."""

    def ended() -> dict | None:
        versions = api.get(f"/api/runs/{run_id}/versions").json()["versions"]
        found = [v for v in versions if v["number"] == number]
        return found[0] if found and found[0]["status"] not in ("queued", "rendering") else None

    return wait_for(ended, 120, f"version {number} of {run_id}")


def files_under(root: Path) -> dict[str, str]:
    """Every file of the runs and a hash of its content (locks and indexes aside)."""
    found = {}
    for path in sorted((root / "runs").rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_rerender_makes_a_new_version_downloadable_beside_the_untouched_original(
    api, service, images, tmp_path
):
    run_id = completed(service, images, prediction_mode="pointmap")
    original = api.get(f"/api/runs/{run_id}/versions/1/glb")
    assert original.status_code == 200
    assert f'filename="{run_id}.glb"' in original.headers["content-disposition"]
    scene = tmp_path / "storage" / "runs" / run_id / "scene.glb"
    assert original.content == scene.read_bytes()

    answer = api.post(f"/api/runs/{run_id}/rerender", json={"settings": {"confThreshold": 10}})
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["number"] == 2 and started["status"] in ("queued", "rendering", "completed")
    # Settings not given keep the newest version's (here the run's pointmap mode).
    assert started["settings"]["confThreshold"] == 10
    assert started["settings"]["predictionMode"] == "pointmap"

    version = rendered(api, run_id, 2)
    assert version["status"] == "completed", version
    assert version["glb"] == f"/api/runs/{run_id}/versions/2/glb"
    download = api.get(version["glb"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "model/gltf-binary"
    assert f'filename="{run_id}_v2.glb"' in download.headers["content-disposition"]
    saved = tmp_path / "v2.glb"
    saved.write_bytes(download.content)
    assert read_glb(saved).point_count == version["points"] > 0
    assert scene.read_bytes() == original.content  # the original is never overwritten

    # Range and ETag as for the run's artifacts.
    part = api.get(version["glb"], headers={"Range": "bytes=0-11"})
    assert part.status_code == 206 and part.content == download.content[:12]
    again = api.get(version["glb"], headers={"If-None-Match": download.headers["etag"]})
    assert again.status_code == 304

    listed = api.get(f"/api/runs/{run_id}/versions").json()
    assert listed["runId"] == run_id
    assert [(v["number"], v["source"]) for v in listed["versions"]] == [
        (1, "reconstruction"),
        (2, "space"),
    ]
    assert listed["versions"][0]["glb"] == f"/api/runs/{run_id}/versions/1/glb"
    view = api.get(f"/api/runs/{run_id}").json()
    assert [v["number"] for v in view["versions"]] == [1, 2]
    assert view["parentRunId"] is None


def test_a_one_frame_rerender_keeps_fewer_points(api, service, images):
    run_id = completed(service, images)
    answer = api.post(f"/api/runs/{run_id}/rerender", json={"frame": 1})
    assert answer.status_code == 202, answer.text
    version = rendered(api, run_id, 2)
    assert version["status"] == "completed" and version["frame"] == 1, version
    first = api.get(f"/api/runs/{run_id}/versions").json()["versions"][0]
    assert 0 < version["points"] < first["points"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"settings": {"confThreshold": 101}}, "between 0 and 100"),
        ({"settings": {"maskSky": "true"}}, "maskSky"),
        ({"settings": {"predictionMode": "mesh"}}, "'pointmap' or 'depth'"),
        ({"settings": {"conf_threshold": 10}}, "Unknown setting"),
        ({"settings": {}, "extra": 1}, "Unknown setting"),
        ({"frame": -1}, "frame"),
        ({"frame": True}, "frame"),
        ({"frame": "1"}, "frame"),
    ],
)
def test_bad_rerender_bodies_are_refused_and_change_nothing(
    api, service, images, tmp_path, body, words
):
    run_id = completed(service, images)
    before = files_under(tmp_path / "storage")
    refused = assert_error(api.post(f"/api/runs/{run_id}/rerender", json=body), 400)
    assert words in refused["details"], refused
    assert files_under(tmp_path / "storage") == before


def test_rerender_refusals_name_the_reason_and_change_nothing(api, service, images, tmp_path):
    run_id = completed(service, images)
    root = tmp_path / "storage"
    before = files_under(root)
    out_of_range = assert_error(
        api.post(f"/api/runs/{run_id}/rerender", json={"frame": 3}), 400, "Invalid frame"
    )
    assert "3 frame(s)" in out_of_range["details"]
    not_json = api.post(
        f"/api/runs/{run_id}/rerender", content=b"frame=1", headers={"content-type": "text/plain"}
    )
    assert_error(not_json, 415)
    assert_error(api.post("/api/runs/run_1700000000000_abcdef/rerender", json={}), 404)
    assert_error(api.post("/api/runs/run_..x/rerender", json={}), 400, "Invalid run id")
    assert files_under(root) == before

    never_started = service.create_run().run_id
    busy = assert_error(
        api.post(f"/api/runs/{never_started}/rerender", json={}), 409, "Failed to re-render"
    )
    assert "only a completed run" in busy["details"]
    assert service.get(never_started).versions == []


def test_a_rerender_in_progress_elsewhere_blocks_another_and_cancels(api, service, images):
    run_id = completed(service, images)
    # Another live process holds a waiting re-render of this run.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:

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
        busy = assert_error(api.post(f"/api/runs/{run_id}/rerender", json={}), 409)
        assert "already re-rendering version 2" in busy["details"]
        versions = api.get(f"/api/runs/{run_id}/versions").json()["versions"]
        assert versions[1]["status"] == "queued" and versions[1]["glb"] is None
        assert_error(api.get(f"/api/runs/{run_id}/versions/2/glb"), 404, "Version not found")

        cancelled = api.post(f"/api/runs/{run_id}/rerender/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["runId"] == run_id
        assert cancelled.json()["versions"][1]["status"] == "cancelled"
        assert cancelled.json()["status"] == "completed"  # the run itself is untouched
    finally:
        other.kill()
        other.wait()
    # Once cancelled, the next re-render is number 3.
    answer = api.post(f"/api/runs/{run_id}/rerender", json={})
    assert answer.status_code == 202 and answer.json()["number"] == 3
    assert rendered(api, run_id, 3)["status"] == "completed"
    # Cancelling when nothing renders answers the run as it is.
    idle = api.post(f"/api/runs/{run_id}/rerender/cancel")
    assert idle.status_code == 200 and idle.json()["status"] == "completed"


@pytest.mark.parametrize(
    ("number", "status"),
    [
        ("0", 400),
        ("-1", 400),
        ("01", 400),
        ("1.0", 400),
        ("abc", 400),
        ("..", 404),
        ("1%2F..", 404),
        ("2", 404),
    ],
)
def test_a_version_number_is_a_positive_whole_number_never_a_path(
    api, service, images, number, status
):
    run_id = completed(service, images)
    answer = api.get(f"/api/runs/{run_id}/versions/{number}/glb")
    assert_error(answer, status)


def test_versions_of_unknown_or_unfinished_runs(api, service):
    assert_error(api.get("/api/runs/run_1700000000000_abcdef/versions"), 404, "Run not found")
    assert_error(api.get("/api/runs/run_1700000000000_abcdef/versions/1/glb"), 404)
    waiting = service.create_run().run_id
    assert api.get(f"/api/runs/{waiting}/versions").json() == {"runId": waiting, "versions": []}
    assert_error(api.get(f"/api/runs/{waiting}/versions/1/glb"), 404, "Version not found")


def test_a_forgotten_run_says_so_and_its_rerun_is_linked_to_it(
    api, service, images, local_space, tmp_path
):
    run_id = completed(service, images, conf_threshold=40.0)
    with local_space.override(forget=True):
        answer = api.post(f"/api/runs/{run_id}/rerender", json={"settings": {"maskBlackBg": True}})
        assert answer.status_code == 202, answer.text
        version = rendered(api, run_id, 2)
    assert version["status"] == "failed" and version["errorKind"] == "forgotten", version
    assert "no longer holds" in version["error"] and version["glb"] is None
    assert_error(api.get(f"/api/runs/{run_id}/versions/2/glb"), 404)

    assert_error(api.post(f"/api/runs/{run_id}/rerun", json={"settings": {"x": 1}}), 400)
    rerun = api.post(f"/api/runs/{run_id}/rerun", json={"settings": {"maskBlackBg": True}})
    assert rerun.status_code == 202, rerun.text
    child_id = rerun.json()["runId"]
    assert child_id != run_id and rerun.json()["status"] in ("queued", "uploading", "processing")

    def done() -> dict | None:
        data = api.get(f"/api/runs/{child_id}").json()
        return data if data["status"] in ("completed", "failed", "cancelled") else None

    child = wait_for(done, 120, f"run {child_id}")
    assert child["status"] == "completed", child
    assert child["parentRunId"] == run_id
    # The new settings, and the parent's for those not given.
    assert child["settings"]["maskBlackBg"] is True
    assert child["settings"]["confThreshold"] == 40.0
    parent_images = [p.read_bytes() for p in service.image_paths(run_id)]
    assert [p.read_bytes() for p in service.image_paths(child_id)] == parent_images


def test_rerun_of_a_run_without_images_is_refused(api, service):
    empty = service.create_run().run_id
    refused = assert_error(api.post(f"/api/runs/{empty}/rerun", json={}), 409, "Failed to re-run")
    assert "no images" in refused["details"]
    assert service.run_count() == 1


def test_the_openapi_document_describes_the_version_endpoints():
    paths = openapi_document("/api")["paths"]
    assert set(paths["/api/runs/{runId}/rerender"]) == {"post"}
    assert "202" in paths["/api/runs/{runId}/rerender"]["post"]["responses"]
    assert "409" in paths["/api/runs/{runId}/rerender"]["post"]["responses"]
    glb = paths["/api/runs/{runId}/versions/{number}/glb"]["get"]
    number = next(p for p in glb["parameters"] if p["name"] == "number")
    assert number["schema"]["minimum"] == 1
    assert {"/api/runs/{runId}/versions", "/api/runs/{runId}/rerun"} <= set(paths)
    assert "/api/runs/{runId}/rerender/cancel" in paths


def test_a_run_id_with_a_line_break_gets_the_json_error_shape(api):
    # The mount's pattern stops at a line break, so such a path never reaches the API's routes.
    for path in ("/api/runs/ab%0Acd/versions", "/api/runs/ab%0Acd/versions/1/glb"):
        answer = api.get(path)
        assert answer.headers["content-type"] == "application/json", answer.text
        assert_error(answer, 404, "Not found")


def test_a_version_download_keeps_its_length_behind_a_compressing_middleware(
    service, images, tmp_path
):
    # As under `streamlit run app.py`, whose server compresses answers: the API's middleware,
    # outermost, keeps a GLB's bytes, length and ranges as stored.
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware

    from vggt_core.api import api_middleware, api_routes

    run_id = completed(service, images)
    app = Starlette(
        routes=api_routes(lambda: service),
        middleware=[*api_middleware(), Middleware(GZipMiddleware, minimum_size=10)],
    )
    scene = (tmp_path / "storage" / "runs" / run_id / "scene.glb").read_bytes()
    with TestClient(app, base_url=API_BASE_URL, client=("127.0.0.1", 50000)) as client:
        answer = client.get(
            f"/api/runs/{run_id}/versions/1/glb", headers={"Accept-Encoding": "gzip"}
        )
        assert answer.status_code == 200
        assert "content-encoding" not in answer.headers
        assert answer.headers["content-length"] == str(len(scene))
        assert answer.content == scene
        listed = client.get(f"/api/runs/{run_id}/versions", headers={"Accept-Encoding": "gzip"})
        assert listed.json()["versions"][0]["glb"] == f"/api/runs/{run_id}/versions/1/glb"


def test_a_version_exports_and_the_run_archive_download(api, service, images, tmp_path):
    import json
    import zipfile

    run_id = completed(service, images)
    response = api.get(f"/api/runs/{run_id}/versions/1/exports/cameras")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert f"{run_id}_v1_cameras.json" in response.headers["content-disposition"]
    assert len(json.loads(response.content)["cameras"]) == 3
    colmap = api.get(f"/api/runs/{run_id}/versions/1/exports/colmap")
    assert colmap.status_code == 200 and colmap.content[:2] == b"PK"
    archive = api.get(f"/api/runs/{run_id}/archive")
    assert archive.status_code == 200
    (tmp_path / "run.zip").write_bytes(archive.content)
    with zipfile.ZipFile(tmp_path / "run.zip") as zipped:
        assert "exports/v1_colmap.zip" in zipped.namelist()
    assert_error(api.get(f"/api/runs/{run_id}/versions/1/exports/obj"), 404)
    assert_error(api.get(f"/api/runs/{run_id}/versions/7/exports/ply"), 404)
    assert_error(api.get(f"/api/runs/{run_id}/versions/x/exports/ply"), 400)


def test_an_export_that_cannot_be_made_is_422_and_says_why(api, service, images):
    run_id = completed(service, images, show_cameras=False)
    body = assert_error(api.get(f"/api/runs/{run_id}/versions/1/exports/colmap"), 422)
    assert "re-render it with cameras on" in body["details"]
