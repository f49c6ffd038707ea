"""`python -m vggt_core VERB …`: the command line (see vggt_core/cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
