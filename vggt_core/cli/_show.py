"""How the command line prints: runs as lines or JSON, and a run's progress while it waits."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any, TextIO

from ..models import RunStatus, VGGTRun

__all__ = ["Progress", "print_json", "run_lines", "run_row"]


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Machine-readable output: one JSON document on stdout."""
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out or sys.stdout)


def _seconds(value: float) -> str:
    value = max(0.0, value)
    if value < 90:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min"


def progress_text(run: VGGTRun) -> str:
    """`processing · queue 2 of 5 · 40% · ETA 12 s · Running model` for a run now."""
    parts = [run.status.value]
    if run.status is RunStatus.queued and run.submitted_at is not None:
        parts[0] = "waiting for a worker"
    progress = run.progress
    if progress is not None and run.is_active:
        if progress.rank is not None:
            size = f" of {progress.queue_size}" if progress.queue_size else ""
            parts.append(f"queue position {progress.rank + 1}{size}")
        if progress.fraction is not None:
            parts.append(f"{progress.fraction:.0%}")
        if progress.eta is not None:
            parts.append(f"ETA {_seconds(progress.eta)}")
        if progress.message:
            parts.append(progress.message.splitlines()[0][:80])
    return " · ".join(parts)


class Progress:
    """One line per change on a pipe; a line rewritten in place on a terminal (stderr)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self._last = ""

    def __call__(self, run: VGGTRun) -> None:
        text = f"{run.run_id}: {progress_text(run)}"
        if text == self._last:
            return
        self._last = text
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.out.write("\r" + text[:width].ljust(width))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self) -> None:
        """End the rewritten line before other output."""
        if self.tty and self._last:
            self.out.write("\n")
            self.out.flush()


def run_row(run: VGGTRun) -> str:
    """One line of `list`: id, status, images, when, and the start of its error."""
    when = run.requested_at.strftime("%Y-%m-%d %H:%M")
    error = f"  {run.error.splitlines()[0][:60]}" if run.error else ""
    return f"{run.run_id}  {run.status.value:<10} {len(run.images):>3} images  {when}{error}"


def run_lines(run: VGGTRun) -> list[str]:
    """What `show` prints about a run."""
    s = run.settings
    lines = [
        f"run        {run.run_id}",
        f"status     {run.status.value}"
        + (" (cancel requested)" if run.cancel_requested_at and run.is_active else ""),
        f"settings   confidence {s.conf_threshold:g} · {s.prediction_mode}"
        + "".join(
            f" · {label}"
            for label, on in (
                ("mask black", s.mask_black_bg),
                ("mask white", s.mask_white_bg),
                ("mask sky", s.mask_sky),
                ("no cameras", not s.show_cameras),
                ("no presize", not run.presize),
            )
            if on
        ),
        f"images     {len(run.images)}: {', '.join(run.images[:5])}"
        + (" …" if len(run.images) > 5 else ""),
        f"requested  {run.requested_at.isoformat(timespec='seconds')}",
    ]
    if run.started_at:
        lines.append(f"started    {run.started_at.isoformat(timespec='seconds')}")
    if run.finished_at:
        took = f" ({run.duration_s:.1f} s)" if run.duration_s is not None else ""
        lines.append(f"finished   {run.finished_at.isoformat(timespec='seconds')}{took}")
    if run.is_active:
        lines.append(f"progress   {progress_text(run)}")
    if run.error:
        lines.append(f"error      {run.error}")
    files = [f"{k}: {v}" for k, v in run.artifacts.model_dump().items() if v]
    if files:
        lines.append(f"files      {' · '.join(files)}")
    if run.attempts:
        lines.append(f"attempts   {run.attempt} ({len(run.attempts)} earlier)")
    versions = run.all_versions
    if len(versions) > 1:
        newest = run.version()
        shown = f", newest rendered v{newest.number}" if newest is not None else ""
        lines.append(f"versions   {len(versions)}{shown} (see: versions {run.run_id})")
    if run.render is not None:
        lines.append(f"rendering  v{run.render.number} ({run.render.status.value})")
    if run.parent_run_id:
        lines.append(f"parent     {run.parent_run_id} (this run re-runs it)")
    return lines
