"""``tpcflow info FILE...``: summarise larcv3, larcv2 ROOT or plain ROOT files."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "summarise larcv3 / larcv2 ROOT / ROOT files: entries, products, voxel counts, occupancy, value ranges"
DESCRIPTION = (
    "Print a summary of each file: entries, products and projections, voxel counts, occupancy and value "
    "ranges per product (larcv3 HDF5, larcv2 ROOT), or trees and branches (plain ROOT). With --json, "
    "print one JSON object per file (a list for several files)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="larcv3 .h5, larcv2 .root or ROOT file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--events", action="store_true",
                        help="add per-entry details: event id and, per product, voxels and sum per projection "
                             "(particles: pdg and energy_init)")


def run(args: argparse.Namespace) -> int:
    import json

    from tpcflow.io.summary import format_text, summarize_file

    summaries = [summarize_file(f, events=args.events) for f in args.files]
    if args.json:
        out = summaries[0] if len(summaries) == 1 else summaries
        text = json.dumps(out, indent=1, default=_default)
    else:
        text = "\n\n".join(format_text(s) for s in summaries)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `tpcflow info ... | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _default(obj):
    """JSON fallback for numpy scalars and other plain values."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
