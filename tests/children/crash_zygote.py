"""Forks storage workers for the crash test, from one process that imported vggt_core once.

Usage: crash_zygote.py ROOT LOG PHASE_FILE, with the project and tests/ on PYTHONPATH.
Line protocol on stdin/stdout:
  `fork SEED` → a worker starts on ROOT and works until it is killed; answers `pid PID`
  `reap PID`  → waits for that worker; answers `status RAW_WAIT_STATUS`
A worker appends `created RUN_ID` to LOG only after create_run returned, `deleting RUN_ID`
before it deletes a run, and keeps the code of what it is doing in the first byte of
PHASE_FILE (mapped shared memory: no system call), so the test can tell where each kill landed.
"""

from __future__ import annotations

import mmap
import os
import random
import sys
import traceback
from pathlib import Path

import numpy as np
import trimesh
from helpers_images import png_bytes

from vggt_core._atomic import temp_sibling
from vggt_core.models import Artifacts, RunProgress, RunStatus, VGGTRun, VGGTSettings
from vggt_core.storage import RunStore

PHASES = {
    "startup": 1,  # a new RunStore lists every run, as the app does when it starts
    "delete": 2,
    "create": 3,
    "images": 4,
    "update": 5,
    "artifact_bytes": 6,
    "artifact_stream": 7,
    "finish": 8,
}
KEEP_RUNS = 12  # each worker deletes the oldest runs beyond this, so checks stay fast
CHUNK = 1 << 16


def make_glb(points: int) -> bytes:
    rng = np.random.default_rng(7)
    cloud = trimesh.PointCloud(
        rng.random((points, 3)), colors=rng.integers(0, 255, (points, 4), dtype=np.uint8)
    )
    data = trimesh.Scene(cloud).export(file_type="glb")
    assert int.from_bytes(data[8:12], "little") == len(data)
    return data


def work(root: Path, log_path: Path, phase: mmap.mmap, seed: int, glb: bytes, png: bytes) -> None:
    rng = random.Random(seed)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(kind: str, run_id: str) -> None:
        os.write(log_fd, f"{kind} {run_id}\n".encode())  # one write: a line is never torn

    def at(name: str) -> None:
        phase[0] = PHASES[name]

    at("startup")
    store = RunStore(root)
    page = store.list_runs(limit=100_000)
    if page.broken:
        raise AssertionError(f"broken runs at start-up: {page.broken}")
    store.counts()
    at("delete")
    for run in page.runs[KEEP_RUNS:]:
        note("deleting", run.run_id)
        store.delete_run(run.run_id, force=True)
    mine: list[str] = []
    while True:
        at("create")
        settings = VGGTSettings(conf_threshold=rng.randint(0, 100))
        run_id = store.create_run(settings, backend="http://127.0.0.1:1").run_id
        note("created", run_id)
        mine.append(run_id)
        at("images")
        count = rng.randint(1, 3)
        store.add_images(run_id, [(f"view_{i}.png", png) for i in range(count)])
        at("update")
        for status in (RunStatus.uploading, RunStatus.processing):

            def step(r: VGGTRun, status: RunStatus = status) -> None:
                r.status = status

            store.update(run_id, step)
        for i in range(rng.randint(1, 4)):

            def progress(r: VGGTRun, i: int = i) -> None:
                r.progress = RunProgress(fraction=i / 8, message=f"step {i} " + "x" * i * 40)

            store.update(run_id, progress)
        store.update(run_id, lambda r: setattr(r, "status", RunStatus.fetching))
        if rng.random() < 0.5:
            at("artifact_bytes")
            store.save_artifact(run_id, "glb", glb)
        else:
            at("artifact_stream")  # as a download streams: a temp name, then moved into place
            tmp = temp_sibling(store.artifact_path(run_id, "glb"))
            with tmp.open("xb") as out:
                for offset in range(0, len(glb), CHUNK):
                    out.write(glb[offset : offset + CHUNK])
            store.save_artifact(run_id, "glb", tmp)
        at("finish")

        def finish(r: VGGTRun) -> None:
            r.status = RunStatus.completed
            r.artifacts = Artifacts(glb="scene.glb")

        store.update(run_id, finish)
        if len(mine) > 2 and rng.random() < 0.25:
            at("delete")
            doomed = mine.pop(0)
            note("deleting", doomed)
            store.delete_run(doomed)


def main() -> None:
    root, log_path, phase_path = (Path(a) for a in sys.argv[1:4])
    glb, png = make_glb(60_000), png_bytes(64, 48, seed=3)
    with phase_path.open("r+b") as handle:
        phase = mmap.mmap(handle.fileno(), 1)
    print("ready", flush=True)
    for line in sys.stdin:
        command, value = line.split()
        if command == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    work(root, log_path, phase, int(value), glb, png)
                except BaseException:
                    traceback.print_exc()
                    sys.stderr.flush()
                finally:
                    os._exit(70)  # a worker only ever ends by being killed
            print(f"pid {pid}", flush=True)
        elif command == "reap":
            _, status = os.waitpid(int(value), 0)
            print(f"status {status}", flush=True)


if __name__ == "__main__":
    main()
