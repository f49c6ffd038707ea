"""The whole journey in a real browser: `streamlit run app.py` + the stand-in Space + Chromium.

Each test is what a person does: upload photos through the real file input, set the knobs,
reconstruct, watch it finish, look at the 3D preview, download the model, find the run in
History, delete it, recover from a failure, start two runs and keep using the app meanwhile.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pytest
from PIL import Image

from vggt_core import RunStatus, RunStore, VGGTSettings
from vggt_core.glb import read_glb

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:  # the `page` fixture says why the tests cannot run (skip, or fail in CI)
    expect = None  # type: ignore[assignment]
    PlaywrightError = Exception  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from conftest import AppServer
    from playwright.sync_api import Locator, Page

    from vggt_core.local_space import LocalSpaceProcess

pytestmark = pytest.mark.e2e

T = TypeVar("T")

# Deadlines, not expectations: a run on the stand-in takes about 2 s idle, far more when loaded.
RUN_TIMEOUT_MS = 120_000
PAGE_TIMEOUT_MS = 90_000  # the first visit pays for Streamlit's and plotly's bundles
WAIT_S = 60.0  # polls of the disk and of the canvas
QUOTA_MESSAGE = re.compile(
    r"The Space's GPU quota for anonymous users is used up; add an HF token or retry in "
    r"\d+ minutes?\."
)
UPLOADER_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
CHART = '[data-testid="stPlotlyChart"]'

# Journey 1 hands its run to journey 2 (History); run alone, journey 2 makes its own.
_handoff: dict[str, str] = {}


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three photos of one scene as a person has them: a JPEG between two PNGs."""
    from vggt_core.local_space import write_sample_images

    folder = tmp_path_factory.mktemp("photos")
    paths = write_sample_images(folder, count=3, size=(160, 120), prefix="view")
    jpeg = paths[1].with_suffix(".jpg")
    with Image.open(paths[1]) as image:
        image.save(jpeg, quality=92)
    paths[1].unlink()
    paths[1] = jpeg
    return paths


@pytest.fixture
def screenshot(page: Page, artifacts_dir: Path) -> Callable[[str], Path]:
    """Save the settled page as tests/e2e/artifacts/<name>.png (see final_screenshot)."""
    return lambda name: final_screenshot(page, artifacts_dir / f"{name}.png")


@pytest.fixture
def store(app_server: AppServer) -> RunStore:
    """The app's storage folder, read from the test's side."""
    return RunStore(app_server.storage)


# --- helpers ----------------------------------------------------------------------------------


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """Poll `probe` (a disk read) until it returns something; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


def open_new_run(page: Page, server: AppServer) -> None:
    """Open the app at / (the safest start: app.py's st.navigation runs first)."""
    page.goto(f"{server.url}/")
    expect(page.get_by_role("heading", name="New reconstruction", level=1)).to_be_visible(
        timeout=PAGE_TIMEOUT_MS
    )


def upload(page: Page, paths: list[Path]) -> None:
    """Choose the photos through the uploader's real file input."""
    page.locator(UPLOADER_INPUT).set_input_files(paths)
    expect(page.get_by_text(f"{len(paths)} images ready")).to_be_visible()
    for path in paths:
        expect(page.get_by_text(path.name).first).to_be_visible()


def reconstruct(page: Page, store: RunStore, images: int) -> str:
    """Press Reconstruct; the new run's id once the page confirms it started."""
    before = set(store.run_ids())
    button = page.get_by_role("button", name="Reconstruct")
    expect(button).to_be_enabled()
    button.click()
    run_id = wait_for(
        lambda: next(iter(set(store.run_ids()) - before), None), "the new run's folder"
    )
    expect(page.get_by_text(f"Started run {run_id} with {images} images.")).to_be_visible()
    # The page hands out a fresh, empty uploader for the next run.
    expect(page.get_by_text("Up to 200 images a run,")).to_be_visible()
    return run_id


def run_card(page: Page, run_id: str) -> Locator:
    """The bordered card of one run under "Runs started in this session"."""
    header = page.locator("code", has_text=re.compile(f"^{re.escape(run_id)}$"))
    return page.locator('[data-testid="stVerticalBlock"]').filter(has=header).last


def table_row(page: Page, run_id: str) -> Locator:
    """A run's row in History's table (the grid draws on a canvas; this is its a11y table)."""
    return page.locator('[data-testid="stDataFrame"] [role="row"]').filter(has_text=run_id)


def expect_completed(card: Locator) -> None:
    """Every step ticked, the badge says so, and the model is offered for download."""
    expect(card).to_contain_text("✓ Fetching → ✓ Completed", timeout=RUN_TIMEOUT_MS)
    expect(card.get_by_test_id("stHorizontalBlock").first).to_contain_text("Completed")
    expect(card.get_by_role("button", name="Download GLB")).to_be_visible()


def canvas_pixels(chart: Locator) -> np.ndarray:
    """A screenshot of the chart's WebGL canvas as an RGB array."""
    png = chart.locator("canvas").first.screenshot(animations="disabled")
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def expect_3d_rendered(chart: Locator, timeout: float = WAIT_S) -> None:
    """The chart's WebGL canvas shows a point cloud: varied pixels, not a blank background.

    WebGL draws on an animation frame after the element appears, so this polls screenshots
    until the drawing is there (or the time is up).
    """
    expect(chart.locator("canvas").first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    deadline = time.monotonic() + timeout
    while True:
        try:
            pixels = canvas_pixels(chart)
        except PlaywrightError as exc:
            # A rerun (the live panel's last one) can replace the chart between locate and
            # screenshot: take the new one on the next pass.
            if "not attached" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        background = np.median(pixels.reshape(-1, 3), axis=0)
        drawn = float((np.abs(pixels - background).sum(axis=2) > 40).mean())
        spread = float(pixels.mean(axis=2).var())
        if drawn > 0.02 and spread > 50:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the 3D preview looks blank: {drawn:.1%} of the canvas differs from the "
                f"background, luminance variance {spread:.1f}"
            )
        time.sleep(0.2)


def final_screenshot(page: Page, path: Path) -> Path:
    """Check the page is settled and free of raw errors, then save all of it as a PNG."""
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(page.get_by_text("Traceback (most recent call last)")).to_have_count(0)
    expect(page.locator('[data-stale="true"]')).to_have_count(0)
    # The app scrolls inside <main>: grow the window to the content so the shot holds it all.
    viewport = page.viewport_size
    assert viewport is not None
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], height)})
    charts = page.locator(CHART)
    for i in range(charts.count()):
        expect_3d_rendered(charts.nth(i))  # plotly redraws after the resize
    page.screenshot(path=path)
    page.set_viewport_size(viewport)
    return path


def new_completed_run(page: Page, server: AppServer, store: RunStore, photos: list[Path]) -> str:
    """A run made through the New run page with the default settings, finished."""
    open_new_run(page, server)
    upload(page, photos)
    run_id = reconstruct(page, store, len(photos))
    expect_completed(run_card(page, run_id))
    return run_id


def glb_button(page: Page, run_id: str, version: int) -> Locator:
    """The GLB download of one version: the picker changes at once, its button only once
    the page has rerun, and a click on the previous version's button is lost with it."""
    return page.locator(f".st-key-dl_glb_{run_id}_v{version}").get_by_role(
        "button", name="Download GLB"
    )


def demo_calls(space: LocalSpaceProcess, target_dir: str) -> list[dict[str, Any]]:
    """What the stand-in received on /gradio_demo for one uploaded folder."""
    return [
        r
        for r in space.received
        if r["endpoint"] == "/gradio_demo" and r["params"]["target_dir"] == target_dir
    ]


# --- the journeys -----------------------------------------------------------------------------


def test_new_run_upload_settings_reconstruct_preview_download(
    page: Page,
    screenshot: Callable[[str], Path],
    app_server: AppServer,
    space: LocalSpaceProcess,
    store: RunStore,
    photos: list[Path],
    tmp_path: Path,
) -> None:
    open_new_run(page, app_server)
    upload(page, photos)

    # Confidence threshold 50 → 65 with the keyboard, as a person does on the slider.
    slider = page.get_by_role("slider", name="Confidence threshold (percentile)")
    slider.focus()
    for _ in range(15):
        page.keyboard.press("ArrowRight")
    expect(slider).to_have_attribute("aria-valuetext", "65")
    expect(page.locator('[data-testid="stSliderThumbValue"]')).to_have_text("65")

    page.get_by_text("Pointmap Branch", exact=True).click()
    expect(page.get_by_role("radio", name="Pointmap Branch")).to_be_checked()
    page.get_by_text("Show cameras", exact=True).click()
    expect(page.get_by_role("checkbox", name="Show cameras")).not_to_be_checked()

    run_id = reconstruct(page, store, len(photos))
    card = run_card(page, run_id)
    expect_completed(card)
    # The sidebar counts the new run's files at once (not a stale "0 B").
    expect(page.get_by_test_id("stSidebar")).not_to_contain_text("· 0 B on disk")

    # The 3D preview is drawn (WebGL canvas with a point cloud on it).
    chart = card.locator(CHART)
    expect(chart).to_have_count(1, timeout=PAGE_TIMEOUT_MS)  # plotly's bundle loads on demand
    expect_3d_rendered(chart)
    expect(card.get_by_text("Drag to orbit")).to_be_visible()

    # The GLB download is the stored model, and it parses.
    with page.expect_download() as download_info:
        card.get_by_role("button", name="Download GLB").click()
    download = download_info.value
    assert download.failure() is None
    assert download.suggested_filename == f"{run_id}.glb"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    scene = read_glb(saved)
    assert scene.point_count > 1000
    assert scene.cameras == []  # "Show cameras" was unticked
    assert saved.read_bytes() == store.artifact_path(run_id, "glb").read_bytes()

    # What was chosen is what was stored, and what the backend was asked for.
    run = store.load(run_id)
    assert run.status == RunStatus.completed
    assert run.settings == VGGTSettings(
        conf_threshold=65,
        prediction_mode="pointmap",
        mask_black_bg=False,
        mask_white_bg=False,
        mask_sky=False,
        show_cameras=False,
    )
    assert run.images == [p.name for p in photos]
    assert run.remote is not None and run.remote.target_dir
    (call,) = demo_calls(space, run.remote.target_dir)
    assert call["params"]["conf_thres"] == 65
    assert call["params"]["prediction_mode"] == "Pointmap Branch"
    assert call["params"]["show_cam"] is False

    screenshot("journey1_new_run")
    _handoff["completed_run"] = run_id


def test_history_lists_deep_links_and_deletes_the_run(
    page: Page,
    screenshot: Callable[[str], Path],
    app_server: AppServer,
    space: LocalSpaceProcess,
    store: RunStore,
    photos: list[Path],
) -> None:
    run_id = _handoff.pop("completed_run", None) or new_completed_run(
        page, app_server, store, photos
    )

    # The run is listed in History.
    open_new_run(page, app_server)
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History", level=1)).to_be_visible()
    row = table_row(page, run_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Completed")

    # The deep link opens it: heading, settings, preview, downloads.
    page.goto(f"{app_server.url}/history?run={run_id}")
    expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Download GLB")).to_be_visible()
    expect(page.get_by_role("cell", name="Show cameras")).to_be_visible()
    expect_3d_rendered(page.locator(CHART))
    screenshot("journey2_history_detail")

    # Delete, confirm, and it is gone from the list and the disk.
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_text(f"Delete run {run_id} with its images and results?")).to_be_visible()
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_text(f"Deleted run {run_id}.")).to_be_visible()
    expect(page.get_by_role("heading", name=f"Run {run_id}")).to_have_count(0)
    expect(table_row(page, run_id)).to_have_count(0)
    expect(page).not_to_have_url(re.compile(r"[?&]run="))
    assert run_id not in store.run_ids()
    assert not (app_server.storage / "runs" / run_id).exists()
    screenshot("journey2_history_deleted")


def test_quota_failure_shows_plain_words_and_retry_completes(
    page: Page,
    screenshot: Callable[[str], Path],
    app_server: AppServer,
    space: LocalSpaceProcess,
    store: RunStore,
    photos: list[Path],
) -> None:
    from vggt_core.local_space import ZEROGPU_QUOTA_ERROR

    space.set_options(error=ZEROGPU_QUOTA_ERROR, fail_times=1)  # the next call only
    open_new_run(page, app_server)
    upload(page, photos)
    run_id = reconstruct(page, store, len(photos))
    card = run_card(page, run_id)

    expect(card.get_by_role("button", name="Retry")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(card.get_by_text(QUOTA_MESSAGE)).to_be_visible()
    expect(card).to_contain_text("✕ failed")
    for raw in ("Traceback", "AppError", "exceeded your GPU quota"):
        expect(card).not_to_contain_text(raw)
    assert store.load(run_id).status == RunStatus.failed
    screenshot("journey3_failure")

    # The Space is healthy again (fail_times=1 is used up): Retry takes the same run through.
    card.get_by_role("button", name="Retry").click()
    expect(page.get_by_text(f"Started {run_id} again.")).to_be_visible()
    card = run_card(page, run_id)
    expect_completed(card)
    expect(card.get_by_text(QUOTA_MESSAGE)).to_have_count(0)
    expect_3d_rendered(card.locator(CHART))
    run = store.load(run_id)
    assert run.status == RunStatus.completed
    assert run.error is None
    assert store.artifact_exists(run_id, "glb")
    screenshot("journey3_retried")


def test_two_runs_back_to_back_complete_and_the_app_stays_responsive(
    page: Page,
    screenshot: Callable[[str], Path],
    app_server: AppServer,
    space: LocalSpaceProcess,
    store: RunStore,
    photos: list[Path],
) -> None:
    # A slower model, so both runs are still going while the person moves on (the stand-in
    # serves one at a time: the second ends two delays after the first started).
    space.set_options(delay=8.0, progress_steps=8)
    open_new_run(page, app_server)
    upload(page, photos)
    first = reconstruct(page, store, len(photos))
    upload(page, photos[:2])
    second = reconstruct(page, store, 2)

    # The live panel follows them: steps, progress, a Cancel button each.
    for run_id in (first, second):
        card = run_card(page, run_id)
        expect(card.get_by_role("button", name="Cancel")).to_be_visible()
        expect(card).to_contain_text("Elapsed:")
    expect(page.locator('[data-testid="stProgress"]').first).to_be_visible(timeout=RUN_TIMEOUT_MS)

    # A click on History answers while the runs go on: the page does not wait for them. (How
    # fast it answers is the benchmarks' business; a loaded machine must not fail this.)
    started = time.monotonic()
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History", level=1)).to_be_visible()
    answered = time.monotonic() - started
    print(f"History answered {answered:.2f} s after the click")  # shown with -rP
    still_running = [r for r in (first, second) if store.load(r).is_active]
    assert still_running, (
        f"History answered only after both runs ended ({answered:.1f} s after the click)"
    )
    for run_id in (first, second):
        expect(table_row(page, run_id)).to_have_count(1)

    # Both finish; the New run page shows both completed.
    page.get_by_role("link", name="New run").click()
    for run_id in (first, second):
        expect_completed(run_card(page, run_id))
    for run_id in (first, second):
        run = store.load(run_id)
        assert run.status == RunStatus.completed
        assert store.artifact_exists(run_id, "glb")
    assert len(store.load(second).images) == 2
    # The newest completed run shows its preview; the other one offers it on demand.
    expect_3d_rendered(run_card(page, second).locator(CHART))
    expect(run_card(page, first).get_by_text("Show 3D preview")).to_be_visible()
    screenshot("journey4_two_runs")


def test_rerender_switch_versions_and_download_each(
    page: Page,
    screenshot: Callable[[str], Path],
    app_server: AppServer,
    store: RunStore,
    photos: list[Path],
    tmp_path: Path,
) -> None:
    run_id = new_completed_run(page, app_server, store, photos)
    original = store.artifact_path(run_id, "glb").read_bytes()
    page.goto(f"{app_server.url}/history?run={run_id}")
    expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible(timeout=PAGE_TIMEOUT_MS)

    # Re-render with a lower threshold and no cameras: free, and a new version.
    page.get_by_text("Re-render with other settings").click()
    slider = page.get_by_role("slider", name="Confidence threshold (percentile)")
    slider.focus()
    for _ in range(30):
        page.keyboard.press("ArrowLeft")
    expect(slider).to_have_attribute("aria-valuetext", "20")
    form = page.get_by_test_id("stForm")
    form.get_by_text("Show cameras", exact=True).click()
    expect(form.get_by_role("checkbox", name="Show cameras")).not_to_be_checked()
    form.get_by_role("button", name="Re-render").click()
    version = wait_for(
        lambda: ((v := store.load(run_id).version(2)) and not v.is_active and v) or None,
        "version 2",
        timeout=RUN_TIMEOUT_MS / 1000,
    )
    assert version.status.value == "completed", version.error
    assert version.settings == VGGTSettings(conf_threshold=20, show_cameras=False)

    # The page picks the new version; its preview is drawn and its download is its own file.
    picker = page.get_by_role("combobox", name="Version")
    expect(picker).to_have_value(re.compile(r"^v2 · conf 20 · "), timeout=RUN_TIMEOUT_MS)
    expect_3d_rendered(page.locator(CHART).first)
    with page.expect_download() as download_info:
        glb_button(page, run_id, 2).click()
    download = download_info.value
    assert download.suggested_filename == f"{run_id}_v2.glb"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes() == (store.run_dir(run_id) / "versions" / "v2.glb").read_bytes()
    assert read_glb(saved).cameras == []
    screenshot("journey5_versions")

    # Back to the original: the download is scene.glb, untouched.
    picker.click()
    page.get_by_role("option", name=re.compile(r"^v1 · ")).click()
    expect(picker).to_have_value(re.compile(r"^v1 · "))
    with page.expect_download() as download_info:
        glb_button(page, run_id, 1).click()
    first = download_info.value
    assert first.suggested_filename == f"{run_id}.glb"
    first.save_as(tmp_path / "v1.glb")
    assert (tmp_path / "v1.glb").read_bytes() == original
