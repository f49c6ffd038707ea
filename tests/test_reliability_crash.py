"""Processes die or share storage: SIGKILL at random moments loses nothing; no update is lost."""

from __future__ import annotations

import collections
import mmap
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers_images import png_bytes

from vggt_core.glb import read_glb
from vggt_core.images import check_image
from vggt_core.models import VGGTRun
from vggt_core.storage import RunStore, is_valid_run_id

ZYGOTE = Path(__file__).parent / "children" / "crash_zygote.py"
PROJECT = Path(__file__).resolve().parents[1]
KILLS = 200  # kills always made; more (up to MAX_KILLS, MAX_SECONDS) if a write was missed
MAX_KILLS = 600
MAX_SECONDS = 300.0
PHASE_DEADLINE = 60.0  # how long a steered kill waits for its phase before it kills anyway
SEED = 20251124
PHASE_NAMES = {
    0: "not started",
    1: "startup",
    2: "delete",
    3: "create",
    4: "images",
    5: "update",
    6: "artifact_bytes",
    7: "artifact_stream",
    8: "finish",
}
WRITE_PHASES = ("create", "images", "update", "artifact_bytes", "artifact_stream")


class Zygote:
    """The child that forks storage workers on request (see children/crash_zygote.py)."""

    def __init__(self, root: Path, log: Path, phase: Path) -> None:
        phase.write_bytes(b"\0")
        path = os.pathsep.join([str(PROJECT), str(PROJECT / "tests")])
        env = {**os.environ, "PYTHONPATH": path, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.process = subprocess.Popen(
            [sys.executable, str(ZYGOTE), str(root), str(log), str(phase)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(PROJECT),
        )
        assert self._ask(None) == "ready"

    def _ask(self, line: str | None) -> str:
        assert self.process.stdin and self.process.stdout
        if line is not None:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, f"the zygote died (exit {self.process.poll()})"
        return answer

    def fork(self, seed: int) -> int:
        return int(self._ask(f"fork {seed}").split()[1])

    def reap(self, pid: int) -> int:
        return int(self._ask(f"reap {pid}").split()[1])

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def logged(log: Path) -> tuple[set[str], set[str]]:
    created, deleting = set(), set()
    if log.exists():
        for line in log.read_text().splitlines():
            kind, _, run_id = line.partition(" ")
            (created if kind == "created" else deleting).add(run_id)
    return created, deleting


def check_storage(root: Path, log: Path, png: bytes) -> int:
    """Everything a user relies on after a crash; returns how many runs are listed."""
    for meta in root.rglob("metadata.json"):
        run = VGGTRun.model_validate_json(meta.read_bytes())
        if meta.parent.parent == root / "runs" and is_valid_run_id(meta.parent.name):
            assert run.run_id == meta.parent.name
    store = RunStore(root)  # the app starting again
    page = store.list_runs(limit=100_000)
    assert page.broken == [], page.broken
    listed = {run.run_id for run in page.runs}
    created, deleting = logged(log)
    lost = created - deleting - listed
    assert not lost, f"created runs missing from the listing: {sorted(lost)}"
    counts = store.counts()
    assert counts.get("broken", 0) == 0 and sum(counts.values()) == len(listed)
    for run in page.runs:
        folder = store.run_dir(run.run_id)
        glb = folder / "scene.glb"
        if store.artifact_exists(run.run_id, "glb"):
            data = glb.read_bytes()
            assert data[:4] == b"glTF" and int.from_bytes(data[8:12], "little") == len(data)
            assert read_glb(glb).points.shape[0] == 60_000
        else:
            assert not os.path.lexists(glb), f"{glb} exists but is not an artifact"
            assert run.artifacts.glb is None, "metadata names an artifact that is not there"
        for name in os.listdir(folder):
            # Only leftovers of an interrupted write may sit beside the run's own files.
            assert name in {"images", "metadata.json", "scene.glb", ".lock", ".worker"} or (
                name.startswith(".tmp-")
            )
        paths = store.image_paths(run.run_id)
        assert [p.name for p in paths] == sorted(run.images)
        for path in paths:
            assert path.read_bytes() == png
            check_image(path.name, png, max_bytes=10**7, max_pixels=10**7)
    return len(listed)


def wait_for_phase(phase: mmap.mmap, wanted: int, deadline: float) -> None:
    """Poll the worker's phase byte until it shows `wanted` or the deadline passes (a worker
    goes round its loop for ever, so every write phase comes back; a late one is only
    counted where it landed, never failed on)."""
    while phase[0] != wanted and time.monotonic() < deadline:
        time.sleep(0.0002)


@pytest.mark.slow
@pytest.mark.timeout(900)  # MAX_SECONDS of extra kills on top of the usual run, on a busy machine
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Each kill is either at a random time after the fork, or steered into one of the writes
    (killed a random instant after the worker entered it); every phase of WRITE_PHASES must be
    hit at least once, and the kills go on (bounded) until it was. Placement on a loaded machine
    shifts, so what counts is where each kill actually landed."""
    rng = random.Random(SEED)
    root, log, phase_path = tmp_path / "storage", tmp_path / "created.log", tmp_path / "phase"
    png = png_bytes(64, 48, seed=3)
    zygote = Zygote(root, log, phase_path)
    with phase_path.open("r+b") as handle:
        phase = mmap.mmap(handle.fileno(), 1)
    codes = {name: code for code, name in PHASE_NAMES.items()}
    plan = [None, *WRITE_PHASES]  # None: a random moment, as likely to hit start-up or delete
    landed: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    kill = 0
    try:
        while kill < KILLS or (
            kill < MAX_KILLS
            and time.monotonic() - started < MAX_SECONDS
            and any(landed[name] == 0 for name in WRITE_PHASES)
        ):
            target = plan[kill % len(plan)]
            phase[0] = 0  # "not started" until the new worker says otherwise
            pid = zygote.fork(rng.randrange(2**32))
            if target is None:
                time.sleep(rng.uniform(0.0, 0.1))
            else:
                wait_for_phase(phase, codes[target], time.monotonic() + PHASE_DEADLINE)
                time.sleep(rng.uniform(0.0, 0.003))
            os.kill(pid, signal.SIGKILL)
            status = zygote.reap(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"kill {kill}: the worker ended by itself (wait status {status}); see its stderr"
            )
            landed[PHASE_NAMES[phase[0]]] += 1
            check_storage(root, log, png)
            kill += 1
    finally:
        phase.close()
        zygote.close()
    elapsed = time.monotonic() - started
    created, _ = logged(log)
    print(f"\n{kill} kills survived in {elapsed:.1f} s; {len(created)} runs created; ", landed)
    # The kills must have hit the writes, not only the start-up of each worker.
    missed = [name for name in WRITE_PHASES if landed[name] == 0]
    assert not missed, f"no kill landed in {missed} after {kill} kills: {landed}"


# --- two processes sharing storage (the app and a script) ----------------------------------------

RUNS = 5
ROUNDS = 40


def _bump(run: VGGTRun) -> None:
    run.counter = (run.model_extra or {}).get("counter", 0) + 1


def _writer(root: str, run_ids: list[str], seed: int, barrier) -> None:
    store = RunStore(root)
    rng = random.Random(seed)
    barrier.wait(timeout=60)
    for _ in range(ROUNDS):
        for run_id in rng.sample(run_ids, len(run_ids)):
            store.update(run_id, _bump)


@pytest.mark.slow
def test_two_processes_updating_several_runs_while_listing_lose_nothing(tmp_path):
    """Extends test_storage's one-run count: several runs, a random order in each writer, and
    the app listing and filtering all the while."""
    app = RunStore(tmp_path / "storage")
    run_ids = [app.create_run().run_id for _ in range(RUNS)]
    for run_id in run_ids:
        app.update(run_id, lambda r: setattr(r, "counter", 0))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    writers = [
        ctx.Process(target=_writer, args=(str(app.root), run_ids, seed, barrier)) for seed in (1, 2)
    ]
    for proc in writers:
        proc.start()
    stop = threading.Event()
    seen: dict[str, int] = dict.fromkeys(run_ids, 0)
    listings = 0
    problems: list[str] = []

    def list_all_the_while() -> None:
        nonlocal listings
        lister = RunStore(tmp_path / "storage")  # another session of the app
        while not stop.is_set():
            page = lister.list_runs(limit=100)
            filtered = lister.list_runs(status="queued", limit=100)
            if page.broken or page.total != RUNS or filtered.total != RUNS:
                problems.append(f"listing: {page.broken} {page.total} {filtered.total}")
            for run in page.runs:
                counter = run.model_extra["counter"]
                if counter < seen[run.run_id]:
                    problems.append(f"{run.run_id} went back from {seen[run.run_id]} to {counter}")
                seen[run.run_id] = counter
            listings += 1

    lister = threading.Thread(target=list_all_the_while)
    lister.start()
    try:
        barrier.wait(timeout=60)
        rng = random.Random(3)
        for _ in range(ROUNDS):
            for run_id in rng.sample(run_ids, len(run_ids)):
                app.update(run_id, _bump)
    finally:
        for proc in writers:
            proc.join(timeout=120)
        stop.set()
        lister.join(timeout=30)
    assert [p.exitcode for p in writers] == [0, 0]
    assert problems == []
    assert listings > 10
    assert {r.run_id: r.model_extra["counter"] for r in app.list_runs().runs} == dict.fromkeys(
        run_ids, 3 * ROUNDS
    )
    assert app.counts()["queued"] == RUNS
    print(f"\n{3 * ROUNDS * RUNS} updates from 3 writers in 2 processes, {listings} listings")
