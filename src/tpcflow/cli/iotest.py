"""``tpcflow iotest``: read minibatches as training would, without a network; report img/s."""

from __future__ import annotations

HELP = "read run.iterations minibatches of data.file as training would (no network) and report img/s"
DESCRIPTION = "CosmicTagger's iotest mode: measure the data pipeline alone (larcv3 reading, densifying, pooling)."


def add_arguments(parser) -> None:
    from tpcflow.cli.train import add_config_arguments

    add_config_arguments(parser)


def run(args) -> int:
    from tpcflow.cli.train import load_cli_config
    from tpcflow.train.iotest import iotest

    cfg = load_cli_config(args, "iotest")
    res = iotest(cfg)
    print(
        f"iotest: {res['minibatches']} minibatches, {res['images']} images of {res['shape']}, "
        f"{res['images_per_second']:.1f} img/s, mean {res['mean_voxels']:.0f} non-zero voxels per image"
    )
    return 0
