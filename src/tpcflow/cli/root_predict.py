"""``tpcflow root-predict``: score new ROOT files with a model trained by ``root-train``."""

from __future__ import annotations

HELP = "apply a root-train model to new ROOT files (locally or through a server); write scores per event"
DESCRIPTION = (
    "Runs a model trained by `tpcflow root-train` over every event of FILES, with the same preprocessing "
    "as in training, and writes one row per event keyed by the identifier branches (run, event...) and "
    "file/entry: a flat TTree 'scores' (.root, usable as a friend tree) or a Parquet table (.parquet). "
    "--model is a root-train output folder, or http(s)://HOST:PORT/NAME of a model on tpcflow serve-http."
)


def add_arguments(parser) -> None:
    """Add root-predict options."""
    parser.add_argument("files", nargs="+", help="ROOT files or URLs (the tree the model was trained on)")
    parser.add_argument("--model", required=True, help="root-train output folder, or http(s)://HOST:PORT/NAME")
    parser.add_argument("-o", "--output", required=True, help="scores.root or scores.parquet")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="events read and scored at a time")
    parser.add_argument("--token", help="API token of the server (default $TPCFLOW_API_TOKEN)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    """Score the files and write the output; returns 0."""
    from tpcflow.workflows.root_predict import predict_root

    summary = predict_root(args.model, args.files, args.output, chunk_size=args.chunk_size, token=args.token,
                           progress=not args.no_progress)
    print(f"root-predict: {summary['events']} events scored, columns {summary['columns']}, wrote {summary['out']}")
    return 0
