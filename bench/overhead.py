"""The product pipeline's cost over a bare script making the same two gradio calls and download."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from bench.common import Figure
from vggt_core import RunStatus, StudioService, VGGTSettings, load_config
from vggt_core.local_space import (
    LocalSpaceProcess,
    StandInOptions,
    spawn_local_space,
    write_sample_images,
)

TARGET = 1.15
IMAGES = 4
# Model-sized images: the product's presize step has nothing to shrink, so both sides send the
# same bytes and the ratio shows only what the product adds around the calls.
IMAGE_SIZE = (518, 392)


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed afterwards, whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def stand_in(options: StandInOptions, work: Path) -> Iterator[LocalSpaceProcess]:
    """The Space's stand-in as a child process whose files all stay under `work`; stopped after."""
    # Gradio keeps uploads and outputs in GRADIO_TEMP_DIR (by default the machine-wide
    # /tmp/gradio, which nobody cleans): point the child at our folder so they go with it.
    saved = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio-cache")
    try:
        space = spawn_local_space(options, workdir=work / "space")
    finally:
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved
    with space:
        yield space


def sample_files(
    folder: Path, count: int = IMAGES, size: tuple[int, int] = IMAGE_SIZE
) -> list[tuple[str, bytes]]:
    """`count` deterministic PNGs as (name, bytes), the way the app receives uploads."""
    return [(p.name, p.read_bytes()) for p in write_sample_images(folder, count, size)]


def product_service(
    root: Path, backend: str, workers: int = 1, *, run_workers: bool = True
) -> StudioService:
    """The service the app builds from its configuration, on `root` against `backend`.

    `run_workers=False`: a service that stores and lists runs but runs none (no executor).
    """
    config = load_config(
        {
            "VGGT_BACKEND": backend,
            "VGGT_STORAGE_DIR": str(root),
            "VGGT_MAX_CONCURRENT_RUNS": str(workers),
        }
    )
    return StudioService(config, workers=run_workers)


def new_run(service: StudioService, files: list[tuple[str, bytes]]) -> str:
    """A queued run holding `files`, ready for start (what the New run page does first)."""
    run = service.create_run(VGGTSettings())
    service.add_images(run.run_id, files)
    return run.run_id


def product_run(service: StudioService, run_id: str) -> float:
    """Seconds from start to the finished run on disk; raises if it did not complete."""
    start = time.perf_counter()
    service.start(run_id)
    run = service.wait(run_id, timeout=120)
    elapsed = time.perf_counter() - start
    if run.status is not RunStatus.completed:
        raise RuntimeError(f"product run {run_id} ended {run.status.value}: {run.error}")
    return elapsed


def bare_run(url: str, paths: list[Path], dest: Path) -> float:
    """Seconds for only the two gradio calls and the GLB download, as a minimal script does it."""
    start = time.perf_counter()
    client = Client(url, token=False, download_files=False, verbose=False)
    try:
        _, target_dir, _, _ = client.predict(
            input_video=None,
            input_images=[handle_file(str(p)) for p in paths],
            api_name="/update_gallery_on_upload",
        )
        glb, _message, _dropdown = client.predict(
            target_dir=target_dir,
            **VGGTSettings().space_kwargs(),
            api_name="/gradio_demo",
        )
        with httpx.stream("GET", glb["url"], timeout=60) as response, dest.open("wb") as out:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
    finally:
        client.close()
    elapsed = time.perf_counter() - start
    if dest.read_bytes()[:4] != b"glTF":
        raise RuntimeError("the bare script's download is not a GLB")
    return elapsed


def run(quick: bool) -> list[Figure]:
    """Interleave product and bare runs (A B A B …) against one stand-in; ratio of medians."""
    count = 5 if quick else 20
    with (
        temp_dir("vggt-bench-overhead-") as work,
        stand_in(StandInOptions(delay=0), work) as space,
    ):
        files = sample_files(work / "images")
        paths = sorted((work / "images").iterdir())
        service = product_service(work / "storage", space.url, workers=1)
        try:
            # One untimed round of each: imports, first connections, the page cache.
            product_run(service, new_run(service, files))
            bare_run(space.url, paths, work / "warm.glb")
            product, bare = [], []
            for i in range(count):
                run_id = new_run(service, files)
                product.append(product_run(service, run_id))
                bare.append(bare_run(space.url, paths, work / f"bare_{i}.glb"))
        finally:
            service.close()
    ratio = statistics.median(product) / statistics.median(bare)
    label = f"{count} runs each, interleaved, {IMAGES} images {IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}"
    return [
        Figure(
            "overhead_ratio (product median / bare median)",
            f"{ratio:.3f} ({label})",
            f"≤ {TARGET}",
            ratio <= TARGET,
        ),
        Figure("overhead_product_median_s", f"{statistics.median(product):.3f}", "", None),
        Figure("overhead_bare_median_s", f"{statistics.median(bare):.3f}", "", None),
    ]
