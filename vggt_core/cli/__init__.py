"""`python -m vggt_core` / `vggt-studio`: the studio's commands on the same storage as the app.

    submit IMAGES… | --video FILE [--fps N]  [--conf 45 --mode pointmap|depth --mask-black
                    --mask-white --mask-sky --no-cameras --no-presize] [--wait]
    list [--status S] [--search TEXT] [--limit N]      show RUN      wait RUN
    download RUN --out DIR [--version N]     retry RUN     cancel RUN     delete RUN [--yes]
    rerender RUN [settings…] [--frame I] [--wait]     versions RUN     rerun RUN [settings…]
    check      worker      serve [--host H --port P]

Every verb takes `--json` (machine-readable output on stdout), `--storage DIR` (else
VGGT_STORAGE_DIR), and `--server URL [--token T]` to act on a remote studio's REST API instead.
Exit codes: 0 done, 1 the run failed or was cancelled (or the command was refused), 2 bad usage,
3 the backend (or the --server) could not be reached.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import StudioConfig, describe_config_error, load_config
from ..errors import reads_unreachable
from ..models import (
    FINAL_STATUSES,
    PREDICTION_MODES,
    RunStatus,
    VGGTRun,
    VGGTSettings,
    describe_validation_error,
)
from ..storage import is_valid_run_id
from ..video import MAX_SAMPLE_FPS, MIN_SAMPLE_FPS
from ._export import add_export_parser, cmd_export
from ._show import Progress, print_json, run_lines, run_row
from ._studio import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    LocalStudio,
    RemoteStudio,
    Started,
    Studio,
)
from ._versions import VERSION_VERBS, add_version_verbs, cancel_rerender

__all__ = ["VERBS", "build_parser", "main"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
EXIT_INTERRUPTED = 130
LOCAL_ONLY = frozenset({"worker", "serve"})


# --- configuration -----------------------------------------------------------------------------


def _secrets_file() -> dict[str, Any]:
    """Top-level values of ./.streamlit/secrets.toml, as the app started here would read them."""
    path = Path(".streamlit") / "secrets.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if not isinstance(v, dict)}


def _config(args: argparse.Namespace) -> StudioConfig:
    overrides = _secrets_file()
    if args.storage:
        overrides["VGGT_STORAGE_DIR"] = args.storage
    try:
        return load_config(overrides)
    except ValidationError as exc:
        raise CliError(
            f"The configuration is not valid: {describe_config_error(exc)}", EXIT_USAGE
        ) from None


def _studio(args: argparse.Namespace) -> Studio:
    if args.server:
        if args.verb in LOCAL_ONLY:
            raise CliError(f"'{args.verb}' runs on this machine; it takes no --server.", EXIT_USAGE)
        token = args.token or os.environ.get("VGGT_API_TOKEN") or None
        return RemoteStudio(args.server, token)
    return LocalStudio(_config(args))


# --- output ------------------------------------------------------------------------------------


def _exit_code(run: VGGTRun) -> int:
    if run.status is RunStatus.completed:
        return EXIT_OK
    if run.status is RunStatus.failed:
        unreachable = run.error_kind == "unreachable" or (
            run.error_kind is None and reads_unreachable(run.error)  # a run stored before kinds
        )
        return EXIT_UNREACHABLE if unreachable else EXIT_FAILED
    return EXIT_FAILED if run.status in FINAL_STATUSES else EXIT_OK


def _say(args: argparse.Namespace, text: str) -> None:
    """Words for people: on stdout, or on stderr when stdout carries JSON."""
    print(text, file=sys.stderr if args.json else sys.stdout)


def _print_run(args: argparse.Namespace, run: VGGTRun) -> None:
    if args.json:
        print_json(run.to_json_dict())
    else:
        print("\n".join(run_lines(run)))


def _follow(args: argparse.Namespace, studio: Studio, started: Started) -> int:
    """Wait for a run in the foreground with progress; Ctrl-C cancels a run run here."""
    run_id = started.run.run_id
    progress = Progress()
    try:
        run = studio.wait(run_id, progress, timeout=args.timeout)
    except KeyboardInterrupt:
        progress.done()
        if started.foreground:
            studio.cancel(run_id)
            _say(args, f"Cancelled run {run_id}.")
        else:
            _say(args, f"Stopped waiting; run {run_id} goes on (cancel it with: cancel {run_id}).")
        return EXIT_INTERRUPTED
    progress.done()
    _print_run(args, run)
    if run.status is not RunStatus.completed and not args.json:
        print(f"Run {run_id} {run.status.value}.", file=sys.stderr)
    return _exit_code(run)


# --- verbs -------------------------------------------------------------------------------------


def _image_files(paths: Sequence[str]) -> list[tuple[str, bytes]]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise CliError(f"{path} holds no image file.", EXIT_USAGE)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(f"{path}: no such file.", EXIT_USAGE)
    try:
        return [(p.name, p.read_bytes()) for p in files]
    except OSError as exc:
        raise CliError(f"Cannot read {exc.filename}: {exc.strerror}.", EXIT_USAGE) from None


def _started(args: argparse.Namespace, studio: Studio, started: Started) -> int:
    if args.wait or started.foreground:
        _say(args, f"Run {started.run.run_id}: {started.note}")
        return _follow(args, studio, started)
    _say(args, f"Run {started.run.run_id} is waiting. {started.note}")
    if args.json:
        print_json(started.run.to_json_dict())
    return EXIT_OK


def cmd_submit(args: argparse.Namespace, studio: Studio) -> int:
    if bool(args.images) == bool(args.video):
        raise CliError("Give image files or folders, or one --video FILE (not both).", EXIT_USAGE)
    if args.fps is not None and not args.video:
        raise CliError("--fps samples a video: use it with --video FILE.", EXIT_USAGE)
    files = _image_files(args.images) if args.images else []
    try:
        settings = VGGTSettings(
            conf_threshold=args.conf,
            prediction_mode=args.mode,
            mask_black_bg=args.mask_black,
            mask_white_bg=args.mask_white,
            mask_sky=args.mask_sky,
            show_cameras=not args.no_cameras,
        )
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc), EXIT_USAGE) from None
    presize = False if args.no_presize else None
    if args.video:
        video = Path(args.video)
        if not video.is_file():
            raise CliError(f"{video}: no such file.", EXIT_USAGE)
        fps = 1.0 if args.fps is None else args.fps
        return _started(args, studio, studio.submit_video(video, settings, presize, fps))
    return _started(args, studio, studio.submit(files, settings, presize))


def cmd_retry(args: argparse.Namespace, studio: Studio) -> int:
    return _started(args, studio, studio.retry(args.run))


def cmd_wait(args: argparse.Namespace, studio: Studio) -> int:
    started = studio.follow(args.run)
    if started is None:  # not waiting: follow it as it is (running, or already ended)
        started = Started(studio.get(args.run), "", False)
    else:
        _say(args, f"Run {args.run}: {started.note}")
    return _follow(args, studio, started)


def cmd_list(args: argparse.Namespace, studio: Studio) -> int:
    runs, total = studio.list_runs(args.status, args.search, args.limit)
    if args.json:
        print_json({"runs": [run.to_json_dict() for run in runs], "total": total})
        return EXIT_OK
    for run in runs:
        print(run_row(run))
    shown = f"{len(runs)} of {total}" if total > len(runs) else f"{total}"
    print(f"{shown} run{'s' if total != 1 else ''} in {studio.where}", file=sys.stderr)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, studio: Studio) -> int:
    _print_run(args, studio.get(args.run))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, studio: Studio) -> int:
    if cancel_rerender(args, studio):
        return EXIT_OK
    run = studio.cancel(args.run)
    if args.json:
        print_json(run.to_json_dict())
    elif run.status is RunStatus.cancelled:
        print(f"Run {run.run_id} is cancelled.")
    elif run.is_active:
        print(f"Run {run.run_id}: cancel requested; its worker stops it within a second or two.")
    else:
        print(f"Run {run.run_id} had already ended ({run.status.value}).")
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}
    except EOFError:
        return False


def cmd_delete(args: argparse.Namespace, studio: Studio) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"Not deleting {args.run} without --yes (nobody here to confirm).", EXIT_USAGE
            )
        if not _confirm(f"Delete run {args.run} and all its files?"):
            _say(args, "Nothing deleted.")
            return EXIT_FAILED
    studio.delete(args.run, args.force)
    if args.json:
        print_json({"runId": args.run, "deleted": True})
    else:
        print(f"Deleted run {args.run}.")
    return EXIT_OK


def cmd_download(args: argparse.Namespace, studio: Studio) -> int:
    written = studio.download(args.run, Path(args.out), args.version)
    if not written:
        what = "file" if args.version is None else f"rendered version {args.version}"
        raise CliError(f"Run {args.run} has no {what} to download (yet).")
    if args.json:
        print_json({"runId": args.run, "files": [str(p) for p in written]})
    else:
        print("\n".join(str(p) for p in written))
    return EXIT_OK


def cmd_check(args: argparse.Namespace, studio: Studio) -> int:
    result = studio.check()
    if args.json:
        print_json({"ok": result.ok, "summary": result.summary, "details": result.details})
    else:
        print(result.summary)
        for line in result.details:
            print(f"  • {line}")
    if result.ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if result.unreachable else EXIT_FAILED


def _until_stopped() -> None:
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_worker(args: argparse.Namespace, studio: Studio) -> int:
    from ..service import StudioService

    assert isinstance(studio, LocalStudio)
    service = StudioService(studio.config)
    try:
        picked = service.recover()
        _say(
            args,
            f"Running the waiting runs of {service.storage_root} (up to "
            f"{studio.config.max_concurrent_runs} at a time, {len(picked)} waiting now); "
            "Ctrl-C or SIGTERM stops.",
        )
        _until_stopped()
    finally:
        service.close()
    _say(args, "Stopped; running runs ended interrupted, waiting runs stay queued.")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, studio: Studio) -> int:
    import uvicorn

    from ..api import create_api_app
    from ..service import StudioService

    assert isinstance(studio, LocalStudio)
    service = StudioService(studio.config)
    service.recover()
    if studio.config.api_token_value is None:
        _say(args, "VGGT_API_TOKEN is not set: the API answers only this machine (loopback).")
    _say(args, f"The API of {service.storage_root} on http://{args.host}:{args.port}/api")
    uvicorn.run(
        create_api_app(service),
        host=args.host,
        port=args.port,
        log_level="warning" if args.quiet else "info",
        timeout_graceful_shutdown=5,
    )
    return EXIT_OK


Verb = Callable[[argparse.Namespace, Studio], int]
VERBS: dict[str, Verb] = {
    "submit": cmd_submit,
    "list": cmd_list,
    "show": cmd_show,
    "wait": cmd_wait,
    "download": cmd_download,
    "retry": cmd_retry,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "check": cmd_check,
    "worker": cmd_worker,
    "serve": cmd_serve,
    **VERSION_VERBS,
}


# --- the parser --------------------------------------------------------------------------------


def _run_id(value: str) -> str:
    if not is_valid_run_id(value):
        raise argparse.ArgumentTypeError(
            f"'{value[:80]}' is not a run id (run_<epoch ms>_<6 chars>)"
        )
    return value


def _conf(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number") from None
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError("the confidence threshold is a percentile from 0 to 100")
    return number


def _fps(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number") from None
    if not MIN_SAMPLE_FPS <= number <= MAX_SAMPLE_FPS:
        raise argparse.ArgumentTypeError(
            f"the sampling rate is from {MIN_SAMPLE_FPS:g} to {MAX_SAMPLE_FPS:g} a second"
        )
    return number


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if not 1 <= number <= 200:
        raise argparse.ArgumentTypeError("from 1 to 200")
    return number


def _version_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("versions count from 1 (the reconstruction)")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a port number") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError("a port is from 1 to 65535")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per verb, the common options on each."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("--storage", metavar="DIR", help="the storage folder (VGGT_STORAGE_DIR)")
    common.add_argument(
        "--server", metavar="URL", help="act on a remote studio's REST API (http://host:8501)"
    )
    common.add_argument(
        "--token", metavar="T", help="the remote API's bearer token (else VGGT_API_TOKEN)"
    )
    waits = argparse.ArgumentParser(add_help=False)
    waits.add_argument(
        "--timeout", type=float, metavar="S", help="stop waiting after S seconds (exit 1)"
    )

    parser = argparse.ArgumentParser(
        prog="vggt-studio",
        description="VGGT Studio's commands, on the same storage as the app (or --server).",
        epilog="Exit codes: 0 done, 1 run failed or cancelled (or refused), 2 bad usage, "
        "3 backend unreachable.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=text, description=text, parents=[common, *parents])

    p = verb("submit", "create a run from images (or one video's frames) and start it", waits)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, or folders of them")
    p.add_argument("--video", metavar="FILE", help="one video (mp4, mov, webm, mkv) instead")
    p.add_argument(
        "--fps", type=_fps, metavar="N", help="frames kept per second of the video (default 1)"
    )
    p.add_argument("--conf", type=_conf, default=50.0, help="confidence percentile (default 50)")
    p.add_argument("--mode", choices=sorted(PREDICTION_MODES), default="depth")
    p.add_argument("--mask-black", action="store_true", help="drop near-black pixels")
    p.add_argument("--mask-white", action="store_true", help="drop near-white pixels")
    p.add_argument("--mask-sky", action="store_true", help="drop sky pixels")
    p.add_argument("--no-cameras", action="store_true", help="no camera cones in the model")
    p.add_argument("--no-presize", action="store_true", help="send the original images")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")

    p = verb("list", "runs, newest first")
    p.add_argument("--status", choices=[s.value for s in RunStatus])
    p.add_argument("--search", metavar="TEXT", help="text in the run id or an image name")
    p.add_argument("--limit", type=_limit, default=20, metavar="N", help="at most N (1-200)")

    for name, text in (
        ("show", "a run's settings, status, times, error and files"),
        ("cancel", "cancel a waiting or running run (or a completed run's re-render)"),
    ):
        verb(name, text).add_argument("run", type=_run_id, metavar="RUN")
    p = verb("wait", "follow a run until it ends", waits)
    p.add_argument("run", type=_run_id, metavar="RUN")
    p = verb("retry", "run a failed or cancelled run again", waits)
    p.add_argument("run", type=_run_id, metavar="RUN")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")
    p = verb("download", "copy a run's newest GLB (and predictions) into a folder")
    p.add_argument("run", type=_run_id, metavar="RUN")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--version", type=_version_number, metavar="N", help="only version N's GLB")
    add_version_verbs(verb, waits, _run_id, _conf)
    p = verb("delete", "delete a run and its files")
    p.add_argument("run", type=_run_id, metavar="RUN")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="cancel it first if it is still active")
    verb("check", "does the backend serve the VGGT API?")
    verb("worker", "run the storage's waiting runs until stopped (SIGINT/SIGTERM)")
    p = verb("serve", "serve the REST API without the UI")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8600)
    p.add_argument("--quiet", action="store_true", help="no access log")
    add_export_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; its exit code."""
    args = build_parser().parse_args(argv)
    if args.verb == "export":
        return cmd_export(args)
    studio: Studio | None = None
    try:
        studio = _studio(args)
        return VERBS[args.verb](args, studio)
    except CliError as exc:
        print(f"vggt-studio {args.verb}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if studio is not None:
            studio.close()
