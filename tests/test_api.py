"""The REST API in-process (starlette's TestClient over the real ASGI app, a real stand-in Space
and real storage): the earlier system's journey and contract, hostile input, access rules, and
commands that cross between the API and the service as the pages call it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.helpers_http import assert_error, client_for
from tests.helpers_service import wait_for
from vggt_core import RunStatus, StudioService, VGGTSettings, load_config
from vggt_core.api import openapi_document
from vggt_core.local_space import LocalSpace, StandInOptions

TOKEN = "a-test-token-of-some-length"
MAX_IMAGE_BYTES = 200_000
MAX_IMAGES = 4


@pytest.fixture(scope="module")
def slow_space() -> Iterator[LocalSpace]:
    """A stand-in whose model takes a while, so runs are caught while they work."""
    with LocalSpace(StandInOptions(delay=2.0, progress_steps=4, concurrency_limit=8)) as space:
        yield space


def make_service(root: Path, backend: str, **config: str) -> StudioService:
    settings = load_config(
        {
            "VGGT_BACKEND": backend,
            "VGGT_STORAGE_DIR": str(root),
            "VGGT_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
            "VGGT_MAX_IMAGES": str(MAX_IMAGES),
            **config,
        }
    )
    return StudioService(settings, sweep_interval_s=0.3)


@pytest.fixture
def service(tmp_path, local_space) -> Iterator[StudioService]:
    service = make_service(tmp_path / "storage", local_space.url)
    yield service
    service.close()


@pytest.fixture
def api(service) -> Iterator[TestClient]:
    with client_for(service) as client:
        yield client


def upload(files: list[tuple[str, bytes]], field: str = "images") -> list:
    return [(field, (name, data, "application/octet-stream")) for name, data in files]


def poll_final(api: TestClient, run_id: str, timeout: float = 90.0) -> dict:
    def final():
        data = api.get(f"/api/runs/{run_id}").json()
        return data if data["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(final, timeout, f"run {run_id} to end")


def tree(root: Path) -> dict[str, str]:
    """Every file under the storage root and a hash of its content (lock files aside)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".workers"]
        for name in filenames:
            if name in {".lock", ".worker", ".changes"} or name.startswith(".index"):
                continue
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --- the earlier system's journey and answers ---------------------------------------------------


def test_the_earlier_systems_journey_end_to_end(api, service, images):
    created = api.post("/api/runs", json={"settings": {"confThreshold": 45, "maskSky": True}})
    assert created.status_code == 201
    run_id = created.json()["runId"]
    assert created.json() == {"runId": run_id, "status": "queued"}

    files = upload(images[:2]) + upload(images[2:], field="files")
    uploaded = api.post(f"/api/runs/{run_id}/images", files=files)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json() == {
        "runId": run_id,
        "imagesUploaded": 3,
        "images": sorted(name for name, _ in images),
    }

    processing = api.post(f"/api/runs/{run_id}/process")
    assert processing.status_code == 202
    assert processing.json() == {"runId": run_id, "status": "processing"}

    done = poll_final(api, run_id)
    assert done["status"] == "completed", done["error"]
    assert done["settings"]["confThreshold"] == 45 and done["settings"]["maskSky"] is True
    glb_url = f"/api/runs/{run_id}/artifacts/glb"
    assert done["artifacts"] == {"glb": glb_url}  # no predictions file, so no URL for it

    glb = api.get(glb_url)
    assert glb.status_code == 200
    stored = service.artifact(run_id, "glb")
    assert stored is not None and glb.content == stored.read_bytes()
    assert glb.headers["content-length"] == str(stored.stat().st_size)
    assert glb.headers["content-type"] == "model/gltf-binary"

    part = api.get(glb_url, headers={"Range": "bytes=0-11"})
    assert part.status_code == 206 and part.content == stored.read_bytes()[:12]
    assert part.headers["content-range"] == f"bytes 0-11/{stored.stat().st_size}"
    again = api.get(glb_url, headers={"If-None-Match": glb.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_omitted_settings_take_their_defaults_and_an_empty_body_is_fine(api):
    for body in ({}, {"settings": {}}, None):
        response = api.post("/api/runs", json=body) if body is not None else api.post("/api/runs")
        assert response.status_code == 201, response.text
        run = api.get(f"/api/runs/{response.json()['runId']}").json()
        assert run["settings"] == VGGTSettings().to_json_dict()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"confThreshold": 101}, "Confidence threshold must be between 0 and 100"),
        ({"confThreshold": -1}, "Confidence threshold must be between 0 and 100"),
        ({"predictionMode": "mesh"}, "Prediction mode must be 'pointmap' or 'depth'"),
        ({"colour": "red"}, "Unknown setting 'colour'"),
        ({"maskSky": [1]}, "maskSky"),
    ],
)
def test_settings_out_of_range_or_unknown_are_refused_and_nothing_is_stored(
    api, service, settings, words
):
    before = tree(service.storage_root)
    body = assert_error(api.post("/api/runs", json={"settings": settings}), 400, "Invalid settings")
    assert words in body["details"]
    assert tree(service.storage_root) == before


def test_starting_twice_is_409_and_without_images_400(api, images):
    run_id = api.post("/api/runs").json()["runId"]
    body = assert_error(api.post(f"/api/runs/{run_id}/process"), 400)
    assert body == {"error": "Failed to start processing", "details": "Run has no images"}

    api.post(f"/api/runs/{run_id}/images", files=upload(images))
    assert api.post(f"/api/runs/{run_id}/process").status_code == 202
    body = assert_error(api.post(f"/api/runs/{run_id}/process"), 409)
    assert body == {"error": "Failed to start processing", "details": "Run is already processing"}
    late = assert_error(api.post(f"/api/runs/{run_id}/images", files=upload(images)), 409)
    assert late["error"] == "Failed to upload images"
    poll_final(api, run_id)


def test_unknown_and_malformed_ids_and_artifact_types(api, service):
    missing = "run_1700000000000_abcdef"
    for method, path in [
        ("GET", f"/api/runs/{missing}"),
        ("POST", f"/api/runs/{missing}/process"),
        ("POST", f"/api/runs/{missing}/cancel"),
        ("POST", f"/api/runs/{missing}/retry"),
        ("DELETE", f"/api/runs/{missing}"),
        ("GET", f"/api/runs/{missing}/artifacts/glb"),
    ]:
        assert_error(api.request(method, path), 404, "Run not found")
    for bad in ["run_1", "RUN_1700000000000_abcdef", "run_1700000000000_ABCDEF", "x" * 300]:
        assert_error(api.get(f"/api/runs/{bad}"), 400, "Invalid run id")
    run_id = api.post("/api/runs").json()["runId"]
    assert_error(api.get(f"/api/runs/{run_id}/artifacts/ply"), 404, "Unknown artifact type")
    assert_error(api.get(f"/api/runs/{run_id}/artifacts/glb"), 404, "Artifact not found")
    assert_error(api.get("/api/nothing-here"), 404, "Not found")
    assert_error(api.put("/api/runs"), 405, "Method not allowed")


def test_listing_filters_searches_and_pages(api, images):
    ids = []
    for index in range(3):
        run_id = api.post("/api/runs").json()["runId"]
        named = [(f"scene{index}_{name}", data) for name, data in images[:1]]
        api.post(f"/api/runs/{run_id}/images", files=upload(named))
        ids.append(run_id)
    api.post(f"/api/runs/{ids[0]}/process")
    poll_final(api, ids[0])

    page = api.get("/api/runs", params={"limit": 2}).json()
    assert page["total"] == 3 and [r["runId"] for r in page["runs"]] == ids[::-1][:2]
    rest = api.get("/api/runs", params={"limit": 2, "offset": 2}).json()
    assert [r["runId"] for r in rest["runs"]] == [ids[0]]
    assert rest["runs"][0]["artifacts"] == {"glb": f"/api/runs/{ids[0]}/artifacts/glb"}
    done = api.get("/api/runs", params={"status": "completed"}).json()
    assert [r["runId"] for r in done["runs"]] == [ids[0]]
    found = api.get("/api/runs", params={"q": "SCENE1"}).json()
    assert [r["runId"] for r in found["runs"]] == [ids[1]]
    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 999}, {"offset": -1}, {"x": 1}):
        assert_error(api.get("/api/runs", params=params), 400, "Invalid query")


def test_delete_refuses_an_active_run_unless_forced(tmp_path, slow_space, images):
    service = make_service(tmp_path / "storage", slow_space.url)
    try:
        with client_for(service) as api:
            run_id = api.post("/api/runs").json()["runId"]
            api.post(f"/api/runs/{run_id}/images", files=upload(images))
            api.post(f"/api/runs/{run_id}/process")
            body = assert_error(api.delete(f"/api/runs/{run_id}"), 409, "Failed to delete run")
            assert "force=true" in body["details"]
            gone = api.delete(f"/api/runs/{run_id}", params={"force": "true"})
            assert gone.status_code == 200 and gone.json() == {"runId": run_id, "deleted": True}
            assert_error(api.get(f"/api/runs/{run_id}"), 404)
    finally:
        service.close()


def test_health_names_the_backend_without_credentials_and_counts(tmp_path, local_space):
    service = make_service(
        tmp_path / "storage",
        local_space.url.replace("http://", "http://user:pw@") + "?secret=1",
        HF_TOKEN="hf_abcdefghijklmnopqrstuvwxyz",
    )
    try:
        with client_for(service) as api:
            api.post("/api/runs")
            health = api.get("/api/health").json()
            assert health["ok"] is True and health["hfToken"] is True
            assert health["backend"] == local_space.url
            assert health["auth"] == "loopback" and health["runs"] == 1
            assert health["counts"]["queued"] == 1
            assert health["limits"]["maxImageBytes"] == MAX_IMAGE_BYTES
            assert health["check"] is None
            text = json.dumps(health)
            assert "pw" not in text and "hf_abc" not in text and "secret" not in text
            checked = api.get("/api/health", params={"check": "true"}).json()["check"]
            assert checked["ok"] is True, checked
    finally:
        service.close()


def test_the_openapi_document_comes_from_the_models():
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    settings = next(v for k, v in schemas.items() if k.startswith("VGGTSettings"))
    assert set(settings["properties"]) == set(VGGTSettings().to_json_dict())
    assert set(schemas["UploadResponse"]["properties"]) == {"runId", "imagesUploaded", "images"}
    paths = doc["paths"]
    assert set(paths["/api/runs/{runId}"]) == {"get", "delete"}
    upload_body = paths["/api/runs/{runId}/images"]["post"]["requestBody"]
    assert "multipart/form-data" in upload_body["content"]
    statuses = paths["/api/runs/{runId}/process"]["post"]["responses"]
    assert {"202", "400", "404", "409"} <= set(statuses)


# --- hostile input: each refused with its status, nothing stored -------------------------------


def test_path_like_ids_are_refused_and_reach_nothing(api, service):
    before = tree(service.storage_root)
    for raw in [
        "..%2F..%2Fetc",
        "%2e%2e",
        "..",
        "run_1700000000000_abcdef%2F..%2F..",
        "run_1700000000000_abcdef%00",
        "%2Fetc%2Fpasswd",
        "run_1700000000000_abcde%C3%A9",
    ]:
        for method, suffix in [("GET", ""), ("POST", "/process"), ("DELETE", "")]:
            response = api.request(method, f"/api/runs/{raw}{suffix}")
            assert response.status_code in (400, 404, 405), (raw, response.text)
            assert set(response.json()) == {"error", "details"}
    assert tree(service.storage_root) == before


def test_hostile_uploads_are_refused_whole_and_nothing_is_stored(api, service, images):
    run_id = api.post("/api/runs").json()["runId"]
    before = tree(service.storage_root)
    url = f"/api/runs/{run_id}/images"

    body = assert_error(
        api.post(url, files=upload([images[0], ("notes.txt", b"not an image at all")])),
        400,
        "Images rejected",
    )
    assert [p["file"] for p in body["details"]] == ["notes.txt"]

    big = [("big.png", images[0][1] + b"\0" * MAX_IMAGE_BYTES)]
    body = assert_error(api.post(url, files=upload(big)), 413, "Request too large")
    assert body["details"][0]["file"] == "big.png"

    many = [(f"{i}.png", images[0][1]) for i in range(MAX_IMAGES + 1)]
    body = assert_error(api.post(url, files=upload(many)), 400, "Images rejected")
    assert "at most 4 images" in body["details"][0]["reason"]

    huge = b"x" * (MAX_IMAGES * (MAX_IMAGE_BYTES + 8192) + 70_000)
    type_ = {"Content-Type": "multipart/form-data; boundary=zzz"}
    assert_error(api.post(url, content=huge, headers=type_), 413, "Request too large")

    field = b"--zzz\r\nContent-Disposition: form-data; name=note\r\n\r\n" + b"f" * 60_000 + b"\r\n"
    fields = field * (len(huge) // len(field) + 1)  # small parts, many: only the total bounds them

    def chunked():  # no Content-Length at all
        for start in range(0, len(fields), 65536):
            yield fields[start : start + 65536]

    assert_error(api.post(url, content=chunked(), headers=type_), 413, "Request too large")
    lying = {**type_, "Content-Length": "10"}
    assert_error(api.post(url, content=fields, headers=lying), 413, "Request too large")

    malformed = b"--zzz\r\nContent-Disposition: form-data; name=images; filename=a.png\r\n\r\nabc"
    assert_error(api.post(url, content=malformed, headers=type_), 400, "Malformed multipart body")
    assert_error(api.post(url, content=b"garbage", headers=type_), 400, "Malformed multipart body")
    assert_error(api.post(url, content=images[0][1]), 415, "Unsupported media type")
    assert_error(api.post(url, data={"just": "a field"}, files=[]), 415)
    empty = b"--zzz\r\nContent-Disposition: form-data; name=note\r\n\r\nhello\r\n--zzz--\r\n"
    assert_error(api.post(url, content=empty, headers=type_), 400, "No images")
    header_bomb = (
        b"--zzz\r\nContent-Disposition: form-data; name=images; filename=a.png\r\nX-Pad: "
        + b"p" * 20_000
        + b"\r\n\r\nabc\r\n--zzz--\r\n"
    )
    bombed = api.post(url, content=header_bomb, headers=type_)  # python-multipart or our bound
    assert_error(bombed, bombed.status_code)
    assert bombed.status_code in (400, 413)

    assert tree(service.storage_root) == before
    assert api.get(f"/api/runs/{run_id}").json()["images"] == []


def test_hostile_json_bodies_are_refused_and_nothing_is_stored(api, service):
    before = tree(service.storage_root)
    json_type = {"Content-Type": "application/json"}
    too_big = json.dumps({"settings": {}, "pad": "x" * 70_000})
    assert_error(api.post("/api/runs", content=too_big, headers=json_type), 413)

    def chunked():
        yield b'{"settings": {}, "pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    assert_error(api.post("/api/runs", content=chunked(), headers=json_type), 413)
    assert_error(api.post("/api/runs", content=b"{not json", headers=json_type), 400)
    assert_error(api.post("/api/runs", content=b"[1, 2]", headers=json_type), 400)
    assert_error(api.post("/api/runs", content=b"[" * 100_000, headers=json_type), 413)
    deep = b"[" * 20_000 + b"]" * 20_000
    assert api.post("/api/runs", content=deep, headers=json_type).status_code in (400, 413)
    # A web page's plain form post carries no JSON type: it never reaches the service.
    form = {"Content-Type": "text/plain"}
    assert_error(api.post("/api/runs", content=b'{"settings": {}}', headers=form), 415)
    assert_error(api.post("/api/runs", json={"settings": {}, "runId": "x"}), 400)
    assert tree(service.storage_root) == before


# --- who is answered ---------------------------------------------------------------------------


def test_without_a_token_only_this_machine_is_answered(service):
    before = tree(service.storage_root)
    with client_for(service, host="10.1.2.3") as remote:
        for method, path in [("GET", "/api/health"), ("POST", "/api/runs")]:
            body = assert_error(remote.request(method, path), 403, "Forbidden")
            assert "VGGT_API_TOKEN" in body["details"]
    with client_for(service) as local:
        assert local.get("/api/health").status_code == 200
        assert local.get("/api/health", headers={"Host": "[::1]:8600"}).status_code == 200
        for headers in (
            {"X-Forwarded-For": "203.0.113.9"},  # relayed by a proxy
            {"Forwarded": "for=203.0.113.9"},
            {"Host": "evil.example:8600"},  # DNS rebinding
            {"Origin": "https://evil.example"},  # another site's page
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            assert_error(local.post("/api/runs", headers=headers), 403, "Forbidden")
        same_site = {"Origin": "http://localhost:8501", "Sec-Fetch-Site": "same-origin"}
        assert local.get("/api/health", headers=same_site).status_code == 200
    with client_for(service, host="::1") as local6:
        assert local6.get("/api/health").status_code == 200
    assert tree(service.storage_root) == before


def test_with_a_token_every_call_needs_it(tmp_path, local_space):
    service = make_service(tmp_path / "storage", local_space.url, VGGT_API_TOKEN=TOKEN)
    try:
        before = tree(service.storage_root)
        with client_for(service, host="198.51.100.7") as api:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-of-some-length"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": "Bearer "},
            ):
                for method, path in [("GET", "/api/health"), ("POST", "/api/runs")]:
                    response = api.request(method, path, headers=headers)
                    assert_error(response, 401, "Unauthorized")
                    assert response.headers["www-authenticate"] == "Bearer"
            assert tree(service.storage_root) == before
            good = {"Authorization": f"Bearer {TOKEN}"}
            health = api.get("/api/health", headers=good).json()
            assert health["auth"] == "token"
            assert TOKEN not in json.dumps(health)
            assert api.post("/api/runs", headers=good).status_code == 201
    finally:
        service.close()


# --- commands crossing between the API and the pages' service ---------------------------------


def test_a_run_started_through_the_api_is_cancelled_from_the_service(tmp_path, slow_space, images):
    service = make_service(tmp_path / "storage", slow_space.url)
    try:
        with client_for(service) as api:
            run_id = api.post("/api/runs").json()["runId"]
            api.post(f"/api/runs/{run_id}/images", files=upload(images))
            api.post(f"/api/runs/{run_id}/process")
            wait_for(lambda: service.get(run_id).status is RunStatus.processing, what="processing")
            service.cancel(run_id)  # as the History page's Cancel button does
            done = poll_final(api, run_id)
            assert done["status"] == "cancelled" and done["artifacts"] == {}
    finally:
        service.close()


def test_a_run_started_by_the_service_is_cancelled_through_the_api(tmp_path, slow_space, images):
    service = make_service(tmp_path / "storage", slow_space.url)
    try:
        with client_for(service) as api:
            run = service.submit(VGGTSettings(), images)  # as the New run page does
            wait_for(lambda: service.get(run.run_id).status is RunStatus.processing, what="busy")
            answer = api.post(f"/api/runs/{run.run_id}/cancel")
            assert answer.status_code == 200 and answer.json()["cancelRequestedAt"]
            assert service.wait(run.run_id, timeout=60).status is RunStatus.cancelled
            retried = api.post(f"/api/runs/{run.run_id}/retry")
            assert retried.status_code == 202
            assert retried.json() == {"runId": run.run_id, "status": "queued"}
            done = poll_final(api, run.run_id)
            assert done["status"] == "completed" and done["attempt"] == 2
            assert [a["status"] for a in done["attempts"]] == ["cancelled"]
            assert_error(api.post(f"/api/runs/{run.run_id}/retry"), 409, "Failed to retry")
    finally:
        service.close()


def test_an_unexpected_failure_is_a_generic_500_and_only_the_log_says_more(caplog):
    def broken() -> StudioService:
        raise RuntimeError("internal detail at /srv/secret")

    with client_for(broken) as api:
        for path in ("/api/health", "/api/runs/run_1700000000000_abcdef"):
            body = assert_error(api.get(path), 500, "Internal server error")
            assert "internal detail" not in json.dumps(body) and "Traceback" not in body["details"]
    assert "internal detail at /srv/secret" in caplog.text
