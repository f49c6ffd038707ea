"""`make demo`: the app against a local stand-in of the Space, both on this machine.

Starts `python -m vggt_core.local_space` and `python -m streamlit run app.py` as child processes,
checks their ports first (failing at once, naming the port, when one is taken), waits for both
to answer HTTP, prints the URL to open, and stops both on Ctrl-C / SIGTERM or when either dies.

Usage: python -m vggt_core.demo [--host H] [--port P] [--space-port P] [-- STAND-IN OPTIONS]
Everything binds to 127.0.0.1 unless --host says otherwise. No streamlit or gradio import here:
this process only supervises.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ._children import stop_group

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_HOST = "127.0.0.1"
DEFAULT_APP_PORT = 8501
DEFAULT_DELAY_S = 3.0  # the stand-in's model step: long enough to watch the progress
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.2
PREFIX = "demo:"


class DemoError(Exception):
    """Why the demo cannot start or had to stop (printed as one line, exit 1)."""


class Stop(Exception):
    """Ctrl-C or SIGTERM arrived while the servers were starting."""


# Set by the signal handler; the loops look at it. A handler that raised instead could do so
# inside subprocess's poll(), between taking its wait lock and the `try` that frees it: every
# later wait() of that child then spins until its timeout and the servers are left running.
_stop_requested = threading.Event()


@dataclass
class Child:
    """One server the demo started, in its own process group."""

    name: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM its process group, SIGKILL what is left after `timeout`; reap it."""
        stop_group(self.process, timeout)


def url_for(host: str, port: int) -> str:
    """The http URL of a server bound to host:port (a wildcard host is reached locally)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - naming the wildcard, not binding to it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind host:port now (as servers do, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port on `host` that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def choose_port(host: str, asked: int | None, default: int | None, what: str) -> int:
    """The port asked for (fail if taken), else the default if free, else any free port."""
    if asked is not None:
        if not port_is_free(host, asked):
            raise DemoError(
                f"port {asked} on {host} for the {what} is already in use (another program "
                f"holds it); stop that program or choose another port"
            )
        return asked
    if default is not None:
        if port_is_free(host, default):
            return default
        port = free_port(host)
        say(f"port {default} on {host} is in use; the {what} takes port {port} instead")
        return port
    return free_port(host)


def say(message: str, *, error: bool = False) -> None:
    """One line of the launcher's own, told apart from the servers' logs."""
    stream = sys.stderr if error else sys.stdout
    # One write: with the servers writing to the same unbuffered stream, print's separate
    # newline let another line land inside this one.
    stream.write(f"{PREFIX} {message}\n")
    stream.flush()


def _no_proxy_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.status, response.read()


def space_answers(url: str) -> bool:
    """The stand-in answers with the Space's API (not merely something on that port)."""
    try:
        status, body = _no_proxy_get(f"{url}/gradio_api/info")
        return status == 200 and "/gradio_demo" in json.loads(body).get("named_endpoints", {})
    except (OSError, ValueError):
        return False


def app_answers(url: str) -> bool:
    """Streamlit's health check says ok."""
    try:
        status, body = _no_proxy_get(f"{url}/_stcore/health")
        return status == 200 and body.strip() == b"ok"
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the launcher dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start(name: str, url: str, argv: list[str], env: dict[str, str]) -> Child:
    """A server as a child process in its own session (Ctrl-C reaches only the launcher)."""
    process = subprocess.Popen(
        argv,
        cwd=PROJECT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    return Child(name, url, process)


def check_alive(children: Sequence[Child]) -> None:
    """Raise naming the first child that has exited."""
    for child in children:
        code = child.process.poll()
        if code is not None:
            raise DemoError(f"the {child.name} exited with code {code} (its log is above)")


def wait_until_ready(checks: Sequence[tuple[Child, Callable[[str], bool]]], timeout: float) -> None:
    """Poll each child's HTTP check until all answer; fail when one dies or time is up."""
    deadline = time.monotonic() + timeout
    pending = list(checks)
    while pending:
        if _stop_requested.is_set():
            raise Stop
        check_alive([child for child, _ in checks])
        pending = [(child, ok) for child, ok in pending if not ok(child.url)]
        if not pending:
            return
        if time.monotonic() > deadline:
            names = " and ".join(f"the {child.name} ({child.url})" for child, _ in pending)
            raise DemoError(f"{names} did not answer within {timeout:.0f} s")
        _stop_requested.wait(POLL_S)


def build_parser() -> argparse.ArgumentParser:
    """The launcher's options; anything after `--` goes to the stand-in."""
    parser = argparse.ArgumentParser(
        prog="python -m vggt_core.demo",
        description="Run VGGT Studio against a local stand-in of the Space (works offline).",
        epilog="Options after -- go to the stand-in (python -m vggt_core.local_space --help), "
        "e.g. -- --quota-error --fail-times 1.",
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="interface both servers bind (default 127.0.0.1)")
    add("--space-host", help="interface of the stand-in, if not --host")
    add(
        "--port",
        type=int,
        help=f"the app's port; fails if taken (default {DEFAULT_APP_PORT}, or a free one if taken)",
    )
    add("--space-port", type=int, help="the stand-in's port; fails if taken (default: a free one)")
    add("--delay", type=float, default=DEFAULT_DELAY_S, help="the stand-in's model step, seconds")
    add(
        "--timeout",
        type=float,
        default=START_TIMEOUT_S,
        help=f"seconds both servers get to answer (default {START_TIMEOUT_S:.0f})",
    )
    return parser


def _request_stop(signum: int, frame: FrameType | None) -> None:
    _stop_requested.set()


def run(args: argparse.Namespace, space_args: list[str]) -> int:
    """Start both servers, print the URL, supervise; 0 after Ctrl-C/SIGTERM, 1 on a failure."""
    if not (PROJECT / "app.py").is_file():
        raise DemoError(f"app.py is not in {PROJECT}: run the demo from a checkout")
    space_host = args.space_host or args.host
    space_port = choose_port(space_host, args.space_port, None, "stand-in Space")
    app_port = choose_port(args.host, args.port, DEFAULT_APP_PORT, "app")
    space_url, app_url = url_for(space_host, space_port), url_for(args.host, app_port)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    space_argv = [sys.executable, "-m", "vggt_core.local_space", "--host", space_host]
    space_argv += ["--port", str(space_port), "--delay", str(args.delay), "--exit-with-parent"]
    app_argv = [sys.executable, "-m", "streamlit", "run", "app.py"]
    app_argv += ["--server.address", args.host, "--server.port", str(app_port)]
    app_argv += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    children: list[Child] = []
    try:
        space = start("stand-in Space", space_url, space_argv + space_args, env)
        children.append(space)
        app = start("app", app_url, app_argv, {**env, "VGGT_BACKEND": space_url})
        children.append(app)
        wait_until_ready([(space, space_answers), (app, app_answers)], args.timeout)
        say(f"VGGT Studio is ready: open {app_url}")
        say(f"(the stand-in Space answers at {space_url}; Ctrl-C stops both)")
        while not _stop_requested.wait(POLL_S):
            check_alive(children)
        say("stopping")
        return 0
    except (KeyboardInterrupt, Stop):
        say("stopping")
        return 0
    finally:
        for child in reversed(children):
            child.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    _stop_requested.clear()
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        return run(args, argv[split + 1 :])
    except DemoError as exc:
        say(str(exc), error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
