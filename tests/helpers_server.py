"""Servers as child processes for tests: `streamlit run app.py` or `python -m vggt_core serve`.

Each runs in its own process group with its output in a log file, configured through the
environment only (no developer's secrets.toml), and is waited for with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from vggt_core.local_space import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


@dataclass
class Server:
    """A server process, its URL, the storage it writes and its log."""

    url: str
    storage: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of what the server wrote."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process group, SIGKILL it if it lingers; the leader's exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything it left in its group
        return self.process.returncode


def env_for(storage: Path, backend: str, **more: str) -> dict[str, str]:
    """This environment without VGGT_* or HF_TOKEN, plus the storage, backend and `more`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VGGT_") and k != "HF_TOKEN"}
    return env | {
        "VGGT_BACKEND": backend,
        "VGGT_STORAGE_DIR": str(storage),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        **more,
    }


def start(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    url: str,
    storage: Path,
    *,
    health: str = "/api/health",
    timeout: float = START_TIMEOUT_S,
) -> Server:
    """Start `argv` and wait until `url + health` answers 200 (or the process dies)."""
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(url, storage, process, log_path)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {process.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}{health}").status_code == 200:
                    return server
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError(
                    f"the server did not answer in {timeout} s:\n{server.log_tail()}"
                )
            time.sleep(0.1)


def streamlit_run(
    work: Path, storage: Path, backend: str, *, log_path: Path | None = None, **env: str
) -> Server:
    """`streamlit run app.py` on a free port of 127.0.0.1, no file watcher, no usage stats."""
    port = free_port()
    secrets = work / "secrets.toml"  # keeps a developer's .streamlit/secrets.toml out
    secrets.write_text("# configured through the environment only\n")
    argv = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    argv += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    # Other people may edit the sources while the suite runs: no reloads mid-test.
    argv += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    argv += ["--secrets.files", str(secrets)]
    log = log_path or work / f"streamlit-{port}.log"
    return start(argv, env_for(storage, backend, **env), log, f"http://127.0.0.1:{port}", storage)


def vggt_serve(work: Path, storage: Path, backend: str, **env: str) -> Server:
    """`python -m vggt_core serve` (the REST API alone) on a free port of 127.0.0.1."""
    port = free_port()
    argv = [sys.executable, "-m", "vggt_core", "serve", "--port", str(port), "--quiet"]
    log = work / f"serve-{port}.log"
    return start(argv, env_for(storage, backend, **env), log, f"http://127.0.0.1:{port}", storage)
