"""`python -m bench [--quick] [--only NAME[,NAME]]`: run the benchmarks, one line per figure."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Sequence

# Set before anything imports gradio: the stand-in and the clients must never phone home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MODULES = (
    "overhead",
    "concurrency",
    "history",
    "history_scale",
    "memory",
    "preview",
    "click",
    "upload_prep",
    "api",
    "rerender",
    "video",
    "cameras",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: `--quick`, `--only`, `--list`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="VGGT Studio benchmarks: each figure is a ratio measured within one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced run: one case of each figure (minutes, not seconds: see bench/README.md)",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help=f"run only these modules (of {', '.join(MODULES)})",
    )
    parser.add_argument("--list", action="store_true", help="print the module names and stop")
    return parser.parse_args(argv)


def selected(only: str) -> list[str]:
    """The modules to run, in the canonical order; unknown names are an error."""
    if not only.strip():
        return list(MODULES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(MODULES)}")
    return [m for m in MODULES if m in names]


def run_module(name: str, quick: bool) -> None:
    """Import `bench.<name>` lazily and print its figures; any failure becomes one ERROR line."""
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
        figures = module.run(quick)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a benchmark reports; one broken module must not stop the rest
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{name}: ERROR {type(exc).__name__}: {message}"[:400], flush=True)
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        return
    for figure in figures:
        print(figure.line(), flush=True)
    print(f"# {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks; always 0, since a benchmark reports and does not fail CI."""
    args = parse_args(argv)
    if args.list:
        print("\n".join(MODULES))
        return 0
    start = time.perf_counter()
    for name in selected(args.only):
        run_module(name, args.quick)
    mode = "quick" if args.quick else "full"
    print(f"# bench ({mode}): {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
