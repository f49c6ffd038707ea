"""Installs like a Python package: `pip install .` and `pip install -e .` give `vggt_core`, the
`vggt-studio` command and requirements.txt as the dependencies.

Offline and quick: a fresh venv sees this one's packages through a .pth file (setuptools for
the build, the dependencies at run time), and pip installs only the project (--no-deps
--no-build-isolation). The project is copied first, so the build leaves nothing in the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
DEADLINE_S = 300  # a busy machine; it takes a few seconds when idle


def requirement_lines() -> list[str]:
    lines = (PROJECT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run from a folder without the project in it: imports come from the install."""
    return subprocess.run(
        argv, cwd="/", capture_output=True, text=True, timeout=DEADLINE_S, check=False
    )


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_gives_the_package_its_command_and_its_dependencies(tmp_path, editable):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy2(PROJECT / name, source / name)
    for folder in ("vggt_core", "tests", "bench"):  # the latter two must stay out
        shutil.copytree(
            PROJECT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python, command = str(env_dir / "bin" / "python"), str(env_dir / "bin" / "vggt-studio")
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    site = Path(purelib.stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")

    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet"]
    installed = run([*pip, *(["-e"] if editable else []), str(source)])
    assert installed.returncode == 0, installed.stderr

    where = run([python, "-c", "import vggt_core; print(vggt_core.__file__)"])
    assert where.returncode == 0, where.stderr
    origin = Path(where.stdout.strip())
    assert origin.is_relative_to((source if editable else site) / "vggt_core"), origin
    if not editable:
        assert not (site / "tests").exists() and not (site / "bench").exists()

    for argv in ([python, "-m", "vggt_core", "--help"], [command, "--help"]):
        helped = run(argv)
        assert helped.returncode == 0, helped.stderr
        assert "usage: vggt-studio" in helped.stdout
    unknown = run([command, "frobnicate"])
    assert unknown.returncode == 2
    assert "invalid choice: 'frobnicate'" in unknown.stderr

    requires = run(
        [python, "-c", "import importlib.metadata as m; print(*m.requires('vggt-studio'))"]
    )
    assert requires.stdout.split() == requirement_lines()
