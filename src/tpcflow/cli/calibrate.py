"""``tpcflow calibrate``: choose a trained network's operating point on labelled validation events."""

from __future__ import annotations

HELP = "choose a trained network's background offset on labelled validation events; write the calibrated checkpoint"
DESCRIPTION = (
    "Load mode.weights_location (or the newest checkpoint of run.id), measure CosmicTagger's metrics on the labelled "
    "events of data.file at background-logit offsets from -1 to 2, and keep the offset that meets CosmicTagger's bar "
    "(Non_Bkg_Accuracy 0.95, Cosmic_IoU 0.90, Neutrino_IoU 0.70) with the most margin. Writes mode.output_file "
    "(default <run dir>/calibrated.pt: the same network with the offset in its classifier's bias, for tpcflow "
    "inference, the services and export), <run dir>/calibration.csv and calibration.png. Use validation events, "
    "never the events you report results on. data.downsample must give the checkpoint's training resolution."
)


def add_arguments(parser) -> None:
    from tpcflow.cli.train import add_config_arguments

    add_config_arguments(parser)


def run(args) -> int:
    from tpcflow.cli.train import load_cli_config
    from tpcflow.train.calibrate import CALIBRATION_TARGETS, calibrate
    from tpcflow.train.report import format_metrics

    cfg = load_cli_config(args, "inference")
    result = calibrate(cfg)
    print(format_metrics({"argmax": result.argmax, "calibrated": {"offset": result.offset, **result.chosen},
                          "CosmicTagger target": dict(CALIBRATION_TARGETS)}))
    print(f"calibrated checkpoint: {result.checkpoint} (background offset {result.total_offset:+.2f} in all)\n"
          f"sweep: {result.csv}, {result.plot}")
    return 0
