"""`export`: cameras, COLMAP, nerfstudio or PLY from a GLB file alone (no run, no storage)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ExportError
from ..exports import (
    FORMATS,
    export_cameras_json,
    export_colmap,
    export_nerfstudio,
    export_points_ply,
)
from ._show import print_json
from ._studio import EXIT_FAILED, EXIT_OK

__all__ = ["add_export_parser", "cmd_export"]


def add_export_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `export` (it needs no storage, so it takes none of the common options)."""
    text = "convert a GLB from VGGT's demo (or a run) to COLMAP, cameras JSON, nerfstudio or PLY"
    p = verbs.add_parser("export", help=text, description=text)
    p.add_argument("--glb", required=True, type=Path, metavar="FILE", help="the GLB file")
    p.add_argument("--images", type=Path, metavar="DIR", help="the images the GLB was made from")
    p.add_argument("--predictions", type=Path, metavar="FILE", help="its predictions.npz, if any")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument(
        "--mode",
        choices=("depth", "pointmap"),
        help="the branch the GLB was made with, when it does not tell (default: from the points)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def cmd_export(args: argparse.Namespace) -> int:
    """Write the export; print what was written, or why not."""
    try:
        if args.format == "ply":
            written = export_points_ply(args.glb, args.out)
        else:
            writer = {
                "colmap": export_colmap,
                "cameras": export_cameras_json,
                "nerfstudio": export_nerfstudio,
            }[args.format]
            written = writer(
                args.glb,
                args.out,
                predictions=args.predictions,
                images_dir=args.images,
                mode=args.mode,
            )
    except ExportError as exc:
        print(f"vggt-studio export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json({"format": args.format, "written": str(written)})
    else:
        print(f"{args.format}: {written}")
    return EXIT_OK
