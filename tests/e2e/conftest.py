"""Browser end-to-end fixtures: the stand-in Space, `streamlit run app.py`, headless Chromium.

Both servers are child processes in their own process groups, started once per session and
stopped afterwards (also when a test fails). Chromium is Debian's package driven by Playwright:
Playwright's own browser download cannot work on this machine. Without chromium (or playwright)
the e2e tests skip and say why; with CI=true they fail instead, so a CI run cannot pass silently
without them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.helpers_server import Server as AppServer
from tests.helpers_server import streamlit_run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from vggt_core.local_space import LocalSpaceProcess

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
VIEWPORT = {"width": 1400, "height": 1000}
# Every browser wait is a condition with a generous deadline: on a loaded 2-core machine
# (other builds, the servers, software WebGL) a step that takes 1 s when idle can take 20.
EXPECT_TIMEOUT_MS = 60_000
# The stand-in's model step: long enough for the live panel to show progress, short enough to
# keep the suite fast. Tests that need a longer window set it for themselves and restore it.
MODEL_DELAY_S = 1.0
PROGRESS_STEPS = 4
# The app's default preview budget (200,000 points) costs seconds of software WebGL per chart on
# a 2-core machine; the preview is still a sample of a larger cloud (about 300,000 points).
PREVIEW_POINTS = 30_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _find_chromium() -> str | None:
    # E2E_CHROMIUM names another chromium build (a path or a command) instead of the defaults.
    override = os.environ.get("E2E_CHROMIUM")
    for candidate in (override,) if override else CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright for Python cannot be imported ({exc}); `make test` installs it"
    if _find_chromium() is None:
        looked = os.environ.get("E2E_CHROMIUM") or "`chromium` on PATH and /usr/bin/chromium"
        return (
            f"chromium is not installed (looked for {looked}); "
            "`make test` installs Debian's chromium with apt-get when run as root"
        )
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium; skips the e2e tests when it is missing (fails them when CI=true)."""
    reason = _missing_browser()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"browser end-to-end tests cannot run: {reason} (CI=true: not skipping)")
        pytest.skip(f"browser end-to-end tests skipped: {reason}")
    path = _find_chromium()
    assert path is not None
    return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- the servers ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """tests/e2e/artifacts/: screenshots and server logs (git-ignored); a previous session's
    failure reports are removed, so what is there belongs to this session."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("FAILED_*"):
        stale.unlink(missing_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def stand_in(
    chromium_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalSpaceProcess]:
    """The local stand-in of the Space in a child process (runtime options via set_options)."""
    from vggt_core.local_space import StandInOptions, spawn_local_space

    handle = spawn_local_space(
        StandInOptions(delay=MODEL_DELAY_S, progress_steps=PROGRESS_STEPS),
        workdir=tmp_path_factory.mktemp("e2e_space"),
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def space(stand_in: LocalSpaceProcess) -> Iterator[LocalSpaceProcess]:
    """The stand-in for one test; whatever the test changed (errors, delay) is reset after it."""
    yield stand_in
    stand_in.set_options(
        error=None, fail_times=None, delay=MODEL_DELAY_S, progress_steps=PROGRESS_STEPS
    )


@pytest.fixture(scope="session")
def app_server(
    stand_in: LocalSpaceProcess, tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> Iterator[AppServer]:
    """`streamlit run app.py` on a free port, its backend the stand-in, its storage a temp dir."""
    work = tmp_path_factory.mktemp("e2e_app")
    server = streamlit_run(
        work,
        work / "storage",
        stand_in.url,
        log_path=artifacts_dir / "streamlit.log",
        VGGT_PREVIEW_POINTS=str(PREVIEW_POINTS),
    )
    try:
        yield server
    finally:
        server.stop(timeout=10)


# --- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Browser]:
    """Headless Debian chromium, driven by Playwright."""
    from playwright.sync_api import expect, sync_playwright

    # Playwright's 5 s default is short for a 2-core box that also runs the servers; every
    # wait stays bounded (EXPECT_TIMEOUT_MS), the slow steps (first load, a run) longer.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def is_local(url: str) -> bool:
    """Whether a request stays on this machine: loopback hosts, or data:/blob: URLs."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def requests_made() -> list[str]:
    """Every URL the test's browser context asked for (pages, assets, icons, websockets)."""
    return []


@pytest.fixture
def page(
    request: pytest.FixtureRequest,
    browser: Browser,
    app_server: AppServer,
    artifacts_dir: Path,
    requests_made: list[str],
) -> Iterator[Page]:
    """A fresh browser context (its own Streamlit session); on failure a screenshot is saved.

    Offline means offline: every journey also fails if the page asked anything of a host other
    than this machine (a web font, a favicon, a CDN)."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, timezone_id="UTC")
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    context.on("request", lambda req: requests_made.append(req.url))
    page = context.new_page()
    page.on("websocket", lambda ws: requests_made.append(ws.url))
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        yield page
        assert not page_errors, f"uncaught errors in the page: {page_errors}"
        off_host = sorted({url for url in requests_made if not is_local(url)})
        assert not off_host, f"the page asked hosts other than this machine: {off_host}"
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                page.screenshot(path=artifacts_dir / f"FAILED_{request.node.name}.png")
            (artifacts_dir / f"FAILED_{request.node.name}.log").write_text(
                f"{report.longreprtext}\n\npage errors: {page_errors}\n\n"
                f"streamlit log:\n{app_server.log_tail()}\n"
            )
        context.close()
