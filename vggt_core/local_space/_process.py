"""Running the stand-in: in this process (LocalSpace), as a child process, from the command line."""

import argparse
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
from starlette.middleware import Middleware

from .._children import stop_group
from ._app import build_demo
from ._download_faults import DownloadFaults
from ._handlers import StandIn
from ._options import (
    RUNTIME_FIELDS,
    ZEROGPU_QUOTA_ERROR,
    StandInOptions,
    read_records,
    write_control,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (gradio cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _launch(stand_in: StandIn, demo: gr.Blocks, host: str, port: int | None) -> str:
    options = stand_in.options
    demo.queue(default_concurrency_limit=options.concurrency_limit, max_size=options.queue_max_size)
    attempts = 1 if port else 5
    for attempt in range(attempts):
        try:
            _, local_url, _ = demo.launch(
                prevent_thread_lock=True,
                server_name=host,
                server_port=port or free_port(host),
                quiet=True,
                show_error=True,
                allowed_paths=[str(stand_in.workdir)],
                ssr_mode=False,
                app_kwargs={"middleware": [Middleware(DownloadFaults, stand_in=stand_in)]},
            )
        except OSError:
            # Another process took the port between probing and binding.
            if attempt == attempts - 1:
                raise
            continue
        return str(local_url).rstrip("/")
    raise AssertionError("unreachable")


class LocalSpace:
    """The stand-in served in this process on 127.0.0.1 at a free port (started on creation)."""

    def __init__(
        self,
        options: StandInOptions | None = None,
        workdir: str | Path | None = None,
        *,
        record: str | Path | None = None,
        control: str | Path | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vggt_local_space_"))
        self.stand_in = StandIn(
            options or StandInOptions(), self.workdir, record_path=record, control_path=control
        )
        self.demo = build_demo(self.stand_in)
        self.url = _launch(self.stand_in, self.demo, "127.0.0.1", None)
        self._closed = False

    @property
    def options(self) -> StandInOptions:
        """The live options: change a field and the next call sees it."""
        return self.stand_in.options

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every call received, oldest first: endpoint, session_hash, params, files (uploads)."""
        return self.stand_in.received

    @contextlib.contextmanager
    def override(self, **changes: Any) -> Iterator[StandInOptions]:
        """Set runtime options for a block, then restore the previous values."""
        unknown = set(changes) - set(RUNTIME_FIELDS)
        if unknown:
            raise ValueError(f"not runtime options: {sorted(unknown)}")
        saved = {name: getattr(self.options, name) for name in changes}
        for name, value in changes.items():
            setattr(self.options, name, value)
        try:
            yield self.options
        finally:
            for name, value in saved.items():
                setattr(self.options, name, value)

    def close(self) -> None:
        """Stop the server (and delete the workdir if this object made it)."""
        if self._closed:
            return
        self._closed = True
        self.demo.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalSpace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LocalSpaceProcess:
    """A local space running as a child process (its own process group)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    control_path: Path
    record_path: Path
    log_path: Path
    _owned_dirs: list[Path] = field(default_factory=list, repr=False)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def received(self) -> list[dict[str, Any]]:
        """The calls the child recorded so far."""
        return read_records(self.record_path)

    def set_options(self, **values: Any) -> None:
        """Change runtime options of the running child (through its control file)."""
        write_control(self.control_path, **values)

    def log_text(self) -> str:
        """What the child wrote to stdout/stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (continuing it if stopped), kill it if it lingers, and reap it."""
        stop_group(self.process, timeout, resume=True)
        for directory in self._owned_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._owned_dirs.clear()

    def __enter__(self) -> "LocalSpaceProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """True once the server answers; False if the process exited first."""
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/config").status_code == 200:
                    return True
            time.sleep(0.1)
    raise TimeoutError(f"local space at {url} did not answer in time")


def spawn_local_space(
    options: StandInOptions | None = None,
    *,
    workdir: str | Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> LocalSpaceProcess:
    """Start `python -m vggt_core.local_space` in a child process; return once it answers."""
    options = options or StandInOptions()
    owned: list[Path] = []
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="vggt_local_space_"))
        owned.append(workdir)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = workdir / "_local_space"
    meta.mkdir(exist_ok=True)
    control, record, log_path = meta / "control.json", meta / "record.jsonl", meta / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    deadline = time.monotonic() + timeout
    for _ in range(3):
        port = free_port()
        argv = [sys.executable, "-m", "vggt_core.local_space", "--port", str(port)]
        argv += ["--workdir", str(workdir), "--control", str(control), "--record", str(record)]
        argv += ["--exit-with-parent", *options.to_args(), *extra_args]
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(PROJECT_ROOT),
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        handle = LocalSpaceProcess(url, port, process, workdir, control, record, log_path, owned)
        try:
            ready = _wait_until_ready(process, url, deadline)
        except BaseException:
            handle.stop()
            raise
        if ready:
            return handle
        if "already in use" not in handle.log_text() and "Cannot find empty port" not in (
            handle.log_text()
        ):
            text = handle.log_text()
            handle.stop()
            raise RuntimeError(f"local space exited with {process.returncode}:\n{text[-4000:]}")
    raise RuntimeError("local space could not get a free port")


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.5)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m vggt_core.local_space`."""
    parser = argparse.ArgumentParser(
        prog="python -m vggt_core.local_space",
        description="Serve a local Gradio app with the facebook/vggt Space's API "
        "(/update_gallery_on_upload, /gradio_demo, /update_visualization) and a fast "
        "deterministic stand-in for the model.",
        epilog="--control names a JSON object of runtime options, re-read at every call, e.g. "
        '{"error": null, "delay": 2.0, "progress_steps": 4, "fail_times": 1}; keys: '
        f"{', '.join(RUNTIME_FIELDS)}. Rewriting it restarts the fail_times count. --record "
        "appends one JSON object per call: endpoint, time, session_hash, params, "
        "token_sha256 (of the HF token sent, or null) and, for uploads, files (param, name, "
        "size, sha256).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    add("--port", type=int, default=7860, help="port (default 7860)")
    add("--workdir", help="where input_images_<ts>/ folders go (default: a new temp dir)")
    add("--delay", type=float, default=0.0, help="seconds the model step takes (default 0)")
    add("--progress-steps", type=int, default=0, help="gr.Progress updates during the delay")
    add("--error", help="raise this with gr.Error from /gradio_demo (e.g. a ZeroGPU quota text)")
    add("--quota-error", action="store_true", help="shorthand for --error with the ZeroGPU text")
    add("--fail-times", type=int, help="fail this many calls, then succeed (default: always)")
    add("--exit-after", type=float, help="die with os._exit this many seconds into the model step")
    add("--exit-code", type=int, default=1, help="exit code for --exit-after (default 1)")
    add("--upload-delay", type=float, default=0.0, help="seconds each upload call waits first")
    add("--download-status", type=int, help="answer GLB downloads with this HTTP status (e.g. 404)")
    add("--download-garbage", action="store_true", help="serve an HTML page as the GLB download")
    add("--download-truncate", type=float, help="serve only this fraction (0-1) of each GLB")
    add("--download-rate", type=float, help="serve GLB downloads at this many bytes a second")
    add("--render-delay", type=float, default=0.0, help="seconds each re-render call waits first")
    add(
        "--forget",
        action="store_true",
        help="answer every re-render as a restarted Space does: no reconstruction available",
    )
    add("--return-predictions", action="store_true", help="add predictions.npz as 4th output")
    add("--max-size", type=int, default=20, help="queue max_size; 0 = unbounded (default 20)")
    add("--concurrency-limit", type=int, default=1, help="per-event concurrency; 0 = unlimited")
    add("--control", help="JSON file of runtime options, re-read at every call")
    add("--record", help="append every call received to this JSON-lines file")
    add("--exit-with-parent", action="store_true", help="exit when the parent process is gone")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the local space until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = StandInOptions(
        delay=args.delay,
        progress_steps=args.progress_steps,
        error=ZEROGPU_QUOTA_ERROR if args.quota_error else args.error,
        fail_times=args.fail_times,
        exit_after=args.exit_after,
        exit_code=args.exit_code,
        upload_delay=args.upload_delay,
        download_status=args.download_status,
        download_garbage=args.download_garbage,
        download_truncate=args.download_truncate,
        download_rate=args.download_rate,
        forget=args.forget,
        render_delay=args.render_delay,
        return_predictions=args.return_predictions,
        queue_max_size=args.max_size or None,
        concurrency_limit=args.concurrency_limit or None,
    )
    parent = os.getppid()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vggt_local_space_"))
    stand_in = StandIn(
        options,
        workdir,
        record_path=args.record,
        control_path=args.control,
        allow_exit=True,
    )
    demo = build_demo(stand_in)
    url = _launch(stand_in, demo, args.host, args.port)
    sys.stdout.write(f"local space serving {url} (workdir {stand_in.workdir})\n")  # one write
    sys.stdout.flush()
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        demo.close()
    return 0
