"""`python -m vggt_core.local_space`: serve the stand-in until interrupted."""

import sys

from ._process import main

if __name__ == "__main__":
    sys.exit(main())
