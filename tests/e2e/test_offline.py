"""Offline means offline: the app's pages ask nothing of any host but this machine.

The `page` fixture checks this after every journey too (so the 3D preview, History and the
downloads are covered); here it is the point of the test, with the pages a first visit opens.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import is_local

try:
    from playwright.sync_api import expect
except ImportError:  # the `page` fixture says why the tests cannot run (skip, or fail in CI)
    expect = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from conftest import AppServer
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

PAGE_TIMEOUT_MS = 90_000  # the first visit pays for Streamlit's bundles


def test_pages_ask_nothing_of_other_hosts(
    page: Page, app_server: AppServer, requests_made: list[str], tmp_path: Path
) -> None:
    from vggt_core.local_space import write_sample_images

    page.goto(f"{app_server.url}/")
    expect(page.get_by_role("heading", name="New reconstruction", level=1)).to_be_visible(
        timeout=PAGE_TIMEOUT_MS
    )
    # The tab's icon is served from here (Streamlit's :material/ page icons come from Google).
    icon = page.locator("link[rel='shortcut icon']")
    expect(icon).to_have_attribute(
        "href", re.compile(r"^(data:|/|http://(127\.0\.0\.1|localhost))")
    )
    # Icons in the sidebar and navigation, and the uploader with photos in it.
    expect(page.get_by_role("link", name="History")).to_be_visible()
    photos = write_sample_images(tmp_path, count=2, size=(160, 120), prefix="view")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(photos)
    expect(page.get_by_text("2 images ready")).to_be_visible()
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History", level=1)).to_be_visible()

    assert any(url.startswith(app_server.url) for url in requests_made)  # it did record
    off_host = sorted({url for url in requests_made if not is_local(url)})
    assert off_host == [], f"the page asked hosts other than this machine: {off_host}"
