"""``tpcflow generate OUT.h5``: write synthetic SBND-like events to a larcv3 file."""

from __future__ import annotations

import argparse

HELP = "write synthetic SBND-like events (cosmics, a neutrino, noise) to a larcv3 file"
DESCRIPTION = (
    "Generate synthetic SBND-like events (tpcflow.sim.sbnd) and write them to a larcv3 HDF5 file with "
    "products sparse2d_sbndwire (charge) and sparse2d_sbnd_cosmicseg (labels 0 background, 1 cosmic, "
    "2 neutrino). The same seed always gives the same file contents. The file appears atomically."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUT.h5", help="output larcv3 file")
    parser.add_argument("--events", "-n", type=int, default=10, help="number of events")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same events)")
    parser.add_argument("--downsample", type=int, default=0,
                        help="k: planes of (2048>>k, 1280>>k) voxels, charge average-pooled, labels max-pooled")
    parser.add_argument("--compression", type=int, default=1, help="gzip level of the datasets (0-9)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes generating events (default: one per core, at most one per 32 events); "
                             "the file does not depend on it")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tpcflow.errors import ConfigError
    from tpcflow.sim.sbnd import generate_file

    if args.events < 0:
        raise ConfigError(f"--events must be >= 0, but got --events={args.events}")
    if not 0 <= args.downsample <= 10:
        raise ConfigError(f"--downsample must be in [0, 10], but got --downsample={args.downsample}")
    if not 0 <= args.compression <= 9:
        raise ConfigError(f"--compression must be in [0, 9], but got --compression={args.compression}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, but got --workers={args.workers}")
    with tqdm(total=args.events, unit="event", desc="generate", disable=args.quiet) as bar:
        path = generate_file(args.output, args.events, args.seed, downsample=args.downsample,
                             compression=args.compression, callback=lambda done: bar.update(done - bar.n),
                             workers=args.workers)
    print(f"wrote {args.events} events to {path}")
    return 0
