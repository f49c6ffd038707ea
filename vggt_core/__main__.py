"""`python -m vggt_core` and the `vggt-studio` command: for now only the usage."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: vggt-studio [-h] COMMAND ...

VGGT Studio: 3D reconstructions with VGGT, served by a Gradio Space.

The app itself: `make run`, or `make demo` for a local stand-in of the Space (works offline).
No commands yet.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Print the usage; 0 for -h/--help, 2 (a usage error) for anything else."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(USAGE, end="")
        return 0
    if args:
        print(f"vggt-studio: unknown command {args[0]!r}", file=sys.stderr)
    print(USAGE, end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
