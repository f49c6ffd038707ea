"""How the stand-in behaves (StandInOptions), the control file that changes it, the call record."""

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZEROGPU_QUOTA_ERROR = (
    "You have exceeded your GPU quota (60s requested vs. 0s left). Try again in 0:09:48"
)
RUNTIME_FIELDS = (
    "delay",
    "progress_steps",
    "error",
    "fail_times",
    "exit_after",
    "exit_code",
    "upload_delay",
    "download_status",
    "download_garbage",
    "download_truncate",
    "download_rate",
    "forget",
    "render_delay",
    "faithful_video",
)


@dataclass
class StandInOptions:
    """How the stand-in behaves (the CLI flags of the same names explain each field); runtime
    fields may change while the server runs, build fields apply when the app is built."""

    delay: float = 0.0
    progress_steps: int = 0
    error: str | None = None
    fail_times: int | None = None
    exit_after: float | None = None
    exit_code: int = 1
    upload_delay: float = 0.0
    download_status: int | None = None
    download_garbage: bool = False
    download_truncate: float | None = None
    download_rate: float | None = None
    forget: bool = False
    render_delay: float = 0.0
    return_predictions: bool = False
    queue_max_size: int | None = 20
    concurrency_limit: int | None = 1
    # The Space's video sampling as it is (first frame skipped, ZeroDivisionError under 1 fps);
    # off, a clip under 1 fps keeps every frame instead of failing.
    faithful_video: bool = True
    _failure_epoch: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.delay < 0 or self.progress_steps < 0:
            raise ValueError("delay and progress_steps must be >= 0")
        if self.fail_times is not None and self.fail_times < 0:
            raise ValueError("fail_times must be >= 0 or None")
        if self.exit_after is not None and self.exit_after < 0:
            raise ValueError("exit_after must be >= 0 or None")
        if self.upload_delay < 0 or self.render_delay < 0:
            raise ValueError("upload_delay and render_delay must be >= 0")
        if self.download_status is not None and not 100 <= self.download_status <= 599:
            raise ValueError("download_status must be an HTTP status (100-599) or None")
        if self.download_truncate is not None and not 0 <= self.download_truncate < 1:
            raise ValueError("download_truncate must be in [0, 1) or None")
        if self.download_rate is not None and self.download_rate <= 0:
            raise ValueError("download_rate must be > 0 or None")

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in ("error", "fail_times"):
            # Setting either again (even to the same value) starts the fail_times count anew.
            super().__setattr__("_failure_epoch", getattr(self, "_failure_epoch", 0) + 1)

    def to_args(self) -> list[str]:
        """The CLI flags that reproduce these options."""
        args = ["--delay", str(self.delay), "--progress-steps", str(self.progress_steps)]
        if self.error is not None:
            args.append(f"--error={self.error}")  # survives a message starting with "-"
        if self.fail_times is not None:
            args += ["--fail-times", str(self.fail_times)]
        if self.exit_after is not None:
            args += ["--exit-after", str(self.exit_after)]
        args += ["--exit-code", str(self.exit_code)]
        if self.upload_delay:
            args += ["--upload-delay", str(self.upload_delay)]
        if self.download_status is not None:
            args += ["--download-status", str(self.download_status)]
        if self.download_garbage:
            args.append("--download-garbage")
        if self.download_truncate is not None:
            args += ["--download-truncate", str(self.download_truncate)]
        if self.download_rate is not None:
            args += ["--download-rate", str(self.download_rate)]
        if self.forget:
            args.append("--forget")
        if self.render_delay:
            args += ["--render-delay", str(self.render_delay)]
        if self.return_predictions:
            args.append("--return-predictions")
        args += ["--max-size", str(self.queue_max_size if self.queue_max_size is not None else 0)]
        args += ["--concurrency-limit", str(self.concurrency_limit or 0)]
        return args


def write_control(path: str | Path, **values: Any) -> None:
    """Merge runtime option values into a control file atomically (the server re-reads it)."""
    unknown = set(values) - set(RUNTIME_FIELDS)
    if unknown:
        raise ValueError(f"not runtime options: {sorted(unknown)}; allowed: {RUNTIME_FIELDS}")
    path = Path(path)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, path)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The calls recorded in a --record JSON-lines file (an incomplete last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records
