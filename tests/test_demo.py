"""`make demo` (python -m vggt_core.demo): fails at once on a taken port, naming it; otherwise
serves the app against the stand-in on 127.0.0.1, prints the URL to open, and stops both
servers on Ctrl-C or when one of them dies."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

PROJECT = Path(__file__).resolve().parents[1]
START_DEADLINE_S = 180.0  # two servers starting on a possibly busy 2-core machine
STOP_DEADLINE_S = 60.0
READY = re.compile(r"^demo: VGGT Studio is ready: open (http://\S+)$", re.MULTILINE)
SPACE = re.compile(r"the stand-in Space answers at (http://[^;\s]+)")

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def held_port(port: int = 0) -> Iterator[int]:
    """A port on 127.0.0.1 another program listens on for the duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield int(sock.getsockname()[1])


class Demo:
    """`python -m vggt_core.demo ARGS` with its output read line by line."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VGGT_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vggt_core.demo", *args],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: re.Pattern[str], deadline_s: float) -> re.Match[str]:
        """The first output line matching `pattern`; fails if the demo ends or time is up."""
        deadline = time.monotonic() + deadline_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern.pattern!r}:\n" + "\n".join(self.lines)
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, "the demo ended:\n" + "\n".join(self.lines)
            self.lines.append(line)
            if match := pattern.search(line):
                return match

    def wait(self, deadline_s: float = STOP_DEADLINE_S) -> int:
        """Its exit code, once the output is drained; fails saying what still runs."""
        try:
            code = self.process.wait(deadline_s)
        except subprocess.TimeoutExpired:
            alive: list[str] = []
            with contextlib.suppress(psutil.NoSuchProcess):
                alive = [
                    " ".join(p.cmdline()[:4])
                    for p in psutil.Process(self.process.pid).children(recursive=True)
                ]
            while not self._queue.empty():
                self.lines.append(self._queue.get() or "")
            pytest.fail(
                f"the demo still runs after {deadline_s:.0f} s; its children {alive}; its output:\n"
                + "\n".join(self.lines)
            )
        while (line := self._queue.get(timeout=deadline_s)) is not None:
            self.lines.append(line)
        return code

    def stop(self) -> None:
        """Kill what is left (the demo and its servers) after a failed test."""
        if self.process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            self.process.kill()
            self.process.wait(STOP_DEADLINE_S)


@pytest.fixture
def demo() -> Iterator[type[Demo]]:
    """Start demos with `demo(*args)`; anything still running is killed afterwards."""
    started: list[Demo] = []

    def make(*args: str) -> Demo:
        started.append(Demo(*args))
        return started[-1]

    yield make  # type: ignore[misc]
    for each in started:
        each.stop()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=10, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def refuses(url: str) -> bool:
    """Nothing listens there any more."""
    try:
        httpx.get(url, timeout=10, trust_env=False)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def wait_until(condition, what: str, deadline_s: float = STOP_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("flag", ["--port", "--space-port"])
def test_a_taken_port_fails_at_once_naming_it(demo, flag):
    with held_port() as port:
        run = demo(flag, str(port))
        code = run.wait()
    output = "\n".join(run.lines)
    assert code == 1, output
    assert f"port {port} on 127.0.0.1" in output and "already in use" in output, output
    assert "Traceback" not in output
    assert not READY.search(output)  # nothing was started


def test_demo_serves_the_app_against_the_stand_in_and_ctrl_c_stops_both(demo):
    # The app's default port is held (by this test, or by something else already): the demo
    # takes another one and says so, rather than failing or talking to the wrong server.
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):
            stack.enter_context(held_port(8501))
        run = demo()
        url = run.wait_for_line(READY, START_DEADLINE_S)[1]
        space_url = run.wait_for_line(SPACE, STOP_DEADLINE_S)[1]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":8501"), url
    assert any("port 8501 on 127.0.0.1 is in use" in line for line in run.lines), run.lines
    assert httpx.get(f"{url}/_stcore/health", timeout=10, trust_env=False).text == "ok"
    assert answers(url)
    info = httpx.get(f"{space_url}/gradio_api/info", timeout=10, trust_env=False).json()
    assert "/gradio_demo" in info["named_endpoints"]
    servers = psutil.Process(run.process.pid).children(recursive=True)
    backend = next(p for p in servers if "streamlit" in p.cmdline()).environ()["VGGT_BACKEND"]
    assert backend == space_url  # the app talks to this stand-in, not to whatever else

    run.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert run.wait() == 0, run.lines
    wait_until(lambda: refuses(url) and refuses(space_url), "both servers to stop")
    assert not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_when_the_stand_in_dies_the_demo_stops_the_app_and_says_so(demo):
    run = demo()
    url = run.wait_for_line(READY, START_DEADLINE_S)[1]
    space_url = run.wait_for_line(SPACE, STOP_DEADLINE_S)[1]
    stand_in = next(
        p
        for p in psutil.Process(run.process.pid).children()
        if "vggt_core.local_space" in p.cmdline()
    )
    stand_in.kill()
    assert run.wait() == 1, run.lines
    assert any("the stand-in Space exited" in line for line in run.lines), run.lines
    wait_until(lambda: refuses(url) and refuses(space_url), "both servers to stop")


def test_ctrl_c_while_the_servers_start_stops_both(demo):
    run = demo()
    wait_until(
        lambda: len(psutil.Process(run.process.pid).children()) == 2, "both servers to be started"
    )
    servers = psutil.Process(run.process.pid).children(recursive=True)
    run.process.send_signal(signal.SIGINT)  # Ctrl-C before "ready"
    assert run.wait() == 0, run.lines
    assert any(line.endswith("stopping") for line in run.lines), run.lines
    wait_until(
        lambda: not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        "every server process to end",
    )
