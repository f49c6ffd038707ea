"""`export`: cameras, COLMAP, nerfstudio or PLY from a GLB file alone, or from a stored run."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pydantic import ValidationError

from ..config import load_config
from ..errors import VGGTError
from ..exports import (
    FORMATS,
    export_cameras_json,
    export_colmap,
    export_nerfstudio,
    export_points_ply,
)
from ..service import StudioService
from ._show import print_json
from ._studio import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["add_export_parser", "cmd_export"]


def add_export_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `export` (it needs no storage, so it takes none of the common options)."""
    text = "convert a GLB from VGGT's demo (or a run) to COLMAP, cameras JSON, nerfstudio or PLY"
    p = verbs.add_parser("export", help=text, description=text)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--glb", type=Path, metavar="FILE", help="the GLB file")
    source.add_argument("--run", metavar="RUN", help="a stored run (its newest version)")
    p.add_argument("--version", type=int, metavar="N", help="with --run: this version")
    p.add_argument("--storage", metavar="DIR", help="with --run: the storage (VGGT_STORAGE_DIR)")
    p.add_argument("--images", type=Path, metavar="DIR", help="the images the GLB was made from")
    p.add_argument("--predictions", type=Path, metavar="FILE", help="its predictions.npz, if any")
    p.add_argument(
        "--format",
        required=True,
        choices=(*FORMATS, "run"),
        help="run (with --run only): the whole run as a zip",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument(
        "--mode",
        choices=("depth", "pointmap"),
        help="the branch the GLB was made with, when it does not tell (default: from the points)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _from_run(args: argparse.Namespace) -> Path:
    """Export a stored run's version (made once into the run's exports/) and copy it to --out."""
    overrides = {"VGGT_STORAGE_DIR": args.storage} if args.storage else {}
    service = StudioService(load_config(overrides), workers=False, sweep_interval_s=None)
    try:
        if args.format == "run":
            made = service.export_run(args.run)
        else:
            made = service.export(args.run, args.format, version=args.version)
    finally:
        service.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / (f"{args.run}.zip" if args.format == "run" else f"{args.run}_{made.name}")
    shutil.copyfile(made, target)
    return target


def cmd_export(args: argparse.Namespace) -> int:
    """Write the export; print what was written, or why not."""
    if args.run is None and (args.version is not None or args.format == "run"):
        print("vggt-studio export: --version and --format run need --run", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.run is not None:
            written = _from_run(args)
        elif args.format == "ply":
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
    except (VGGTError, ValidationError) as exc:
        print(f"vggt-studio export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"vggt-studio export: could not write {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json({"format": args.format, "written": str(written)})
    else:
        print(f"{args.format}: {written}")
    return EXIT_OK
