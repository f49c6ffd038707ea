"""The REST API beside the pages in one `streamlit run app.py`: a run made through the API is the
pages' run, and a page visit finds the very service the API uses (one executor per process)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from vggt_core.local_space import write_sample_images

if TYPE_CHECKING:
    from conftest import AppServer
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

PAGE_TIMEOUT_MS = 30_000


def heartbeats(storage: Path) -> list[str]:
    folder = storage / ".workers"
    return sorted(p.name for p in folder.glob("*.alive")) if folder.is_dir() else []


def test_a_run_made_through_the_api_is_the_pages_run_on_one_service(
    page: Page, app_server: AppServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    photos = write_sample_images(tmp_path / "photos", count=3)
    with httpx.Client(base_url=app_server.url, timeout=30) as client:
        before = heartbeats(app_server.storage)
        run_id = client.post("/api/runs", json={"settings": {"maskSky": True}}).json()["runId"]
        files = [("images", (p.name, p.read_bytes(), "image/png")) for p in photos]
        assert client.post(f"/api/runs/{run_id}/images", files=files).status_code == 200
        assert client.post(f"/api/runs/{run_id}/process").status_code == 202
        deadline = time.monotonic() + 60
        while (status := client.get(f"/api/runs/{run_id}").json()["status"]) != "completed":
            assert status not in ("failed", "cancelled") and time.monotonic() < deadline, status
            time.sleep(0.2)

    page.goto(f"{app_server.url}/history?run={run_id}")
    expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Download GLB")).to_be_visible()
    # The page's script run asked for its service: the same one (same heartbeat file) as the
    # API's, started with the server; no second executor was made in the process.
    assert len(before) == 1
    assert heartbeats(app_server.storage) == before
