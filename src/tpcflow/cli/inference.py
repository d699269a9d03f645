"""``tpcflow inference``: run a trained UResNet over larcv3 files; predictions, metrics CSV, displays."""

from __future__ import annotations

HELP = "run a trained UResNet over data.file: larcv3 predictions, per-event metrics CSV, event displays"
DESCRIPTION = (
    "Load mode.weights_location (or the newest checkpoint of run.id) and label every voxel of every entry of "
    "data.file, with or without truth labels. Writes mode.output_file (default <run dir>/predictions.h5: "
    "sparse2d cosmicseg_pred labels and cosmicseg_pred_score, on the input's voxels, with its event ids, as "
    "tpcflow submit writes them), <run dir>/inference_metrics.csv (metrics only when the file has labels) and "
    "<run dir>/displays/*.png. data.downsample must give the checkpoint's training resolution. "
    "run.iterations=N limits it to N minibatches."
)


def add_arguments(parser) -> None:
    from tpcflow.cli.train import add_config_arguments

    add_config_arguments(parser)


def run(args) -> int:
    from tpcflow.cli.train import load_cli_config
    from tpcflow.train.inference import infer
    from tpcflow.train.report import format_metrics

    cfg = load_cli_config(args, "inference")
    result = infer(cfg)
    print(format_metrics({f"inference ({result.events} events)": result.metrics}))
    print(f"predictions: {result.output_file}\nper-event metrics: {result.metrics_csv}")
    for p in result.displays:
        print(f"event display: {p}")
    return 0
