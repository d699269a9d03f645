"""``tpcflow train``: train the CosmicTagger UResNet; configuration by dotted ``key=value`` overrides."""

from __future__ import annotations

import argparse

HELP = "train the CosmicTagger UResNet (overrides: run.iterations=100 data.file=train.h5 network=a21 ...)"
DESCRIPTION = (
    "Train the CosmicTagger UResNet on larcv3 files (data.file, validation on data.aux_file) or on "
    "synthetic SBND events (data.synthetic=true). Outputs go to <run.output_dir>/<run.id>/: config.yaml, "
    "metrics.csv, tensorboard/, checkpoints/. A run resumes from its newest checkpoint. "
    "Distributed: torchrun --nproc-per-node N -m tpcflow.cli.main train ..."
)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the option table's line breaks and still show argument defaults."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``KEY=VALUE`` overrides and ``--config``; list every option in the epilog."""
    from tpcflow.config import format_options

    parser.formatter_class = _Formatter
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="configuration overrides, e.g. run.id=test run.iterations=50 mode.optimizer.learning_rate=3e-4",
    )
    parser.add_argument("--config", default=None, help="YAML file with the base configuration (e.g. a run's config.yaml)")
    parser.epilog = "configuration options (KEY=DEFAULT):\n" + format_options()


def load_cli_config(args, mode: str):
    """Return the Config of the parsed arguments for ``mode`` (train / iotest / inference)."""
    from tpcflow.config import load_config

    return load_config(args.overrides, base=args.config, mode=mode)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    from tpcflow.train.loop import train
    from tpcflow.train.report import format_metrics

    cfg = load_cli_config(args, "train")
    result = train(cfg)
    if not result.is_main:
        return 0
    if result.metrics:
        print(format_metrics({"train (last iteration)": result.metrics, "validation (last)": result.validation}))
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    return 0
