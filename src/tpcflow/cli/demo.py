"""``tpcflow demo``: the main job on its embedded defaults (synthetic events, CPU training, inference)."""

from __future__ import annotations

HELP = "generate synthetic SBND events, train a small UResNet on CPU, evaluate, run inference, draw events"
DESCRIPTION = (
    "Runs with no arguments: (1) generates synthetic SBND events, (2) trains a small CosmicTagger UResNet "
    "on the CPU for about 4 minutes (80x128 images per plane), (3) evaluates it on held-out events (before/after training), (4) runs "
    "inference on the held-out larcv3 file and on the real cosmic_tagging_light.h5 when found "
    "($TPCFLOW_DATA or ../shared/data), (5) serves the trained network through an MDP broker and worker on "
    "127.0.0.1 and segments the held-out events with `tpcflow submit`, (6) prints the metrics table and "
    "writes event displays (PNG)."
)


def add_arguments(parser) -> None:
    from tpcflow.workflows.demo import DemoSettings

    d = DemoSettings()
    parser.add_argument("--out", default=str(d.out), help="output directory")
    parser.add_argument("--iterations", type=int, default=d.iterations, help="training iterations (optimizer steps)")
    parser.add_argument("--minibatch-size", type=int, default=d.minibatch_size, help="images per training step")
    parser.add_argument("--downsample", type=int, default=d.downsample, help="images are (1280x2048)/2**downsample per plane")
    parser.add_argument("--train-events", type=int, default=d.train_events, help="synthetic training events")
    parser.add_argument("--test-events", type=int, default=d.test_events, help="held-out synthetic events")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate, help="learning rate (the peak, for one_cycle)")
    parser.add_argument("--lr-schedule", choices=("flat", "one_cycle", "warmup_decay"), default=d.lr_schedule,
                        help="learning-rate schedule (warmup_decay: decays over the second half)")
    parser.add_argument("--loss-scheme", choices=("none", "light", "even", "focal"), default=d.loss_scheme,
                        help="class balancing of the loss (CosmicTagger's loss_balance_scheme)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the events, the weights and the data order")
    parser.add_argument("--displays", type=int, default=d.displays, help="event displays per inference")
    parser.add_argument("--real-file", default="auto", help="real larcv3 file for the last inference ('auto': search, 'none': skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the training progress bar")


def run(args) -> int:
    from pathlib import Path

    from tpcflow.workflows.demo import DemoSettings, run_demo

    extra = (f"run.num_threads={args.threads}",) if args.threads else ()
    real = None if args.real_file.lower() == "none" else ("auto" if args.real_file == "auto" else Path(args.real_file))
    settings = DemoSettings(
        out=Path(args.out),
        downsample=args.downsample,
        train_events=args.train_events,
        test_events=args.test_events,
        iterations=args.iterations,
        minibatch_size=args.minibatch_size,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        loss_scheme=args.loss_scheme,
        seed=args.seed,
        displays=args.displays,
        real_file=real,
        progress=not args.no_progress,
        extra=extra,
    )
    run_demo(settings)
    return 0
