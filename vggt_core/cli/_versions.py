"""The command line's version verbs: `rerender`, `versions`, `rerun` (and `download --version`).

    rerender RUN [--conf N --mode M --[no-]mask-black --[no-]mask-white --[no-]mask-sky
                  --[no-]cameras] [--frame I] [--wait]
    versions RUN                  rerun RUN [settings flags] [--wait]

Settings not given keep the run's newest version's. A local re-render runs in this process, so
the command always waits for it (seconds: no GPU); with --server it waits only with --wait.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..models import PREDICTION_MODES, RenderStatus, RunVersion, VGGTSettings
from ._show import print_json
from ._studio import EXIT_FAILED, EXIT_OK, Studio

__all__ = [
    "VERSION_VERBS",
    "add_version_verbs",
    "cancel_rerender",
    "version_lines",
    "version_row",
]

EXIT_INTERRUPTED = 130
# Why a re-render failed, when the answer is to run the images again.
RERUN_KINDS = frozenset({"forgotten", "unsupported"})

VerbAdder = Callable[..., argparse.ArgumentParser]


def _settings_text(version: RunVersion) -> str:
    s = version.settings
    flags = [
        label
        for label, on in (
            ("mask black", s.mask_black_bg),
            ("mask white", s.mask_white_bg),
            ("mask sky", s.mask_sky),
            ("no cameras", not s.show_cameras),
        )
        if on
    ]
    frame = "all frames" if version.frame is None else f"frame {version.frame}"
    return " · ".join([f"confidence {s.conf_threshold:g}", s.prediction_mode, frame, *flags])


def version_row(version: RunVersion) -> str:
    """One line of `versions`: number, status, points, source, when, settings."""
    points = f"{version.points:,} points" if version.points is not None else "—"
    when = version.requested_at.strftime("%Y-%m-%d %H:%M")
    return (
        f"v{version.number:<3} {version.status.value:<10} {points:>15}  "
        f"{version.source:<14} {when}  {_settings_text(version)}"
    )


def version_lines(run_id: str, version: RunVersion) -> list[str]:
    """What `rerender` prints about the version it made."""
    lines = [
        f"run        {run_id}",
        f"version    {version.number} ({version.status.value}, {version.source})",
        f"settings   {_settings_text(version)}",
    ]
    if version.points is not None:
        lines.append(f"points     {version.points:,}")
    if version.error:
        lines.append(f"error      {version.error}")
    return lines


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (snake_case); the others stay as they were."""
    given = {
        "conf_threshold": args.conf,
        "prediction_mode": args.mode,
        "mask_black_bg": args.mask_black,
        "mask_white_bg": args.mask_white,
        "mask_sky": args.mask_sky,
        "show_cameras": args.cameras,
    }
    return {name: value for name, value in given.items() if value is not None}


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout)


def cmd_rerender(args: argparse.Namespace, studio: Studio) -> int:
    """Re-render a completed run as a new version; wait for it when it runs here or --wait."""
    version = studio.rerender(args.run, _changes(args), args.frame)
    if not (args.wait or studio.renders_here):
        _say(args, f"Run {args.run}: version {version.number} is {version.status.value}.")
        if args.json:
            print_json(version.to_json_dict())
        return EXIT_OK
    last = ""

    def show(current: RunVersion) -> None:
        nonlocal last
        if current.status.value != last:
            last = current.status.value
            print(f"{args.run} v{current.number}: {last}", file=sys.stderr)

    try:
        version = studio.wait_render(args.run, version.number, show, timeout=args.timeout)
    except KeyboardInterrupt:
        if studio.renders_here:  # it would end with this process anyway
            studio.cancel_render(args.run)
            _say(args, f"Cancelled version {version.number} of run {args.run}.")
        else:
            _say(
                args,
                f"Stopped waiting; version {version.number} of run {args.run} goes on "
                f"(cancel it with: cancel {args.run}).",
            )
        return EXIT_INTERRUPTED
    if args.json:
        print_json(version.to_json_dict())
    else:
        print("\n".join(version_lines(args.run, version)))
    if version.status is RenderStatus.completed:
        return EXIT_OK
    reason = version.error or version.status.value
    print(
        f"Version {version.number} of run {args.run} {version.status.value}: {reason}",
        file=sys.stderr,
    )
    if version.error_kind in RERUN_KINDS:
        newest = studio.get(args.run).version()
        flags = _flags(version.settings, newest.settings if newest is not None else None)
        command = " ".join(["rerun", args.run, *flags])
        print(f"Run `{command}` to run it again with these settings.", file=sys.stderr)
    return EXIT_FAILED


def _flags(settings: VGGTSettings, base: VGGTSettings | None) -> list[str]:
    """The command-line flags that turn `base` (the settings rerun starts from) into these."""
    flags: list[str] = []
    if base is None or settings.conf_threshold != base.conf_threshold:
        flags += ["--conf", f"{settings.conf_threshold:g}"]
    if base is None or settings.prediction_mode != base.prediction_mode:
        flags += ["--mode", settings.prediction_mode]
    for name, flag in (
        ("mask_black_bg", "mask-black"),
        ("mask_white_bg", "mask-white"),
        ("mask_sky", "mask-sky"),
        ("show_cameras", "cameras"),
    ):
        value = getattr(settings, name)
        if base is None or value != getattr(base, name):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
    return flags


def cancel_rerender(args: argparse.Namespace, studio: Studio) -> bool:
    """`cancel RUN` on a completed run: cancel its re-render if one waits or runs (True)."""
    run = studio.get(args.run)
    if run.render is None:
        return False
    number = run.render.number
    run = studio.cancel_render(args.run)
    if args.json:
        print_json(run.to_json_dict())
    else:
        print(f"Run {args.run}: cancelled its re-render (version {number}).")
    return True


def cmd_versions(args: argparse.Namespace, studio: Studio) -> int:
    """The run's versions, oldest first."""
    versions = studio.versions(args.run)
    if args.json:
        print_json({"runId": args.run, "versions": [v.to_json_dict() for v in versions]})
        return EXIT_OK
    for version in versions:
        print(version_row(version))
    if not versions:
        print(f"Run {args.run} has no version yet (it is not completed).", file=sys.stderr)
    return EXIT_OK


def cmd_rerun(args: argparse.Namespace, studio: Studio) -> int:
    """A new run of the run's images with changed settings, linked to it as its parent."""
    from . import _started  # the verbs' shared follow-up (a cycle only at import time)

    started = studio.rerun(args.run, _changes(args))
    _say(args, f"Run {started.run.run_id} re-runs {args.run}.")
    return _started(args, studio, started)


VERSION_VERBS: dict[str, Callable[[argparse.Namespace, Studio], int]] = {
    "rerender": cmd_rerender,
    "versions": cmd_versions,
    "rerun": cmd_rerun,
}


def _frame(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError("frames count from 0 (the first)")
    return number


def _settings_flags(p: argparse.ArgumentParser, conf: Callable[[str], float]) -> None:
    keep = " (default: the newest version's)"
    p.add_argument("--conf", type=conf, help="confidence percentile" + keep)
    p.add_argument("--mode", choices=sorted(PREDICTION_MODES), help="prediction head" + keep)
    on_off = argparse.BooleanOptionalAction
    p.add_argument("--mask-black", action=on_off, help="drop near-black pixels" + keep)
    p.add_argument("--mask-white", action=on_off, help="drop near-white pixels" + keep)
    p.add_argument("--mask-sky", action=on_off, help="drop sky pixels" + keep)
    p.add_argument("--cameras", action=on_off, help="camera cones in the model" + keep)


def add_version_verbs(
    verb: VerbAdder,
    waits: argparse.ArgumentParser,
    run_id: Callable[[str], str],
    conf: Callable[[str], float],
) -> None:
    """Register `rerender`, `versions` and `rerun` with the parser's verb helper."""
    p = verb("rerender", "re-render a completed run with new settings: a new version", waits)
    p.add_argument("run", type=run_id, metavar="RUN")
    _settings_flags(p, conf)
    p.add_argument("--frame", type=_frame, metavar="I", help="only frame I's points (0 first)")
    p.add_argument(
        "--wait", action="store_true", help="with --server, follow it (here it always waits)"
    )
    p = verb("versions", "a run's versions (1 is the reconstruction), oldest first")
    p.add_argument("run", type=run_id, metavar="RUN")
    p = verb("rerun", "run a run's images again with new settings, linked to it", waits)
    p.add_argument("run", type=run_id, metavar="RUN")
    _settings_flags(p, conf)
    p.add_argument("--wait", action="store_true", help="follow the new run until it ends")
