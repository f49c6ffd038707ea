"""Test helpers for the command line: `python -m vggt_core` as a child process, a verb run
in-process for its JSON, and this process pointed at a storage and a backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vggt_core.cli import main


def cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m vggt_core <args>` as a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "vggt_core", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run a verb in this process; its exit code and the JSON it printed ({} when none)."""
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def use_storage(root: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point in-process verbs at `root` and `backend`, with no token and no developer's
    .streamlit/secrets.toml (the working folder becomes `root`'s parent); `root`."""
    monkeypatch.setenv("VGGT_STORAGE_DIR", str(root))
    monkeypatch.setenv("VGGT_BACKEND", backend)
    monkeypatch.delenv("VGGT_API_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.chdir(root.parent)
    return root
