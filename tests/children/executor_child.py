"""Runs a StudioService in a process of its own for the restart tests, until it is killed.

Usage: executor_child.py RUN_ID [RUN_ID ...]. The configuration comes from the environment
(VGGT_BACKEND, VGGT_STORAGE_DIR, VGGT_MAX_CONCURRENT_RUNS, …), as the app's does. Submits the
runs in order, prints `submitted`, then waits to be killed.
"""

from __future__ import annotations

import sys
import time

from vggt_core import StudioService, load_config


def main() -> None:
    settings = load_config()
    executor = StudioService(settings)
    for run_id in sys.argv[1:]:
        executor.start(run_id)
    print("submitted", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
