"""``tpcflow worker``: serve a network for an MDP broker (argument parsing only)."""

from __future__ import annotations

HELP = "serve a cosmic-tagger network (checkpoint, TorchScript or user module) for an MDP broker"
DESCRIPTION = (
    "Register SERVICE with the broker and answer requests (the cosmic-tagger payload: 3 sparse "
    "planes in, per-voxel labels and scores out) with dynamic batching. The network is a tpcflow "
    "checkpoint / TorchScript file (--model) or a Python file defining process_net(images) -> "
    "outputs (--module), where images is float32 [B, 3, H, W]. Reconnects after a broker restart."
)


def add_arguments(parser) -> None:
    parser.add_argument("--broker", default="tcp://127.0.0.1:5555", help="broker endpoint")
    parser.add_argument("--service", default="cosmic_tagger", help="service name to register")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", default=None, help="tpcflow checkpoint or TorchScript file")
    src.add_argument("--module", default=None, help="Python file defining process_net(images) -> outputs")
    parser.add_argument("--max-batch", type=int, default=4, help="largest batch of events per forward pass")
    parser.add_argument("--max-wait", type=float, default=0.01, help="seconds to wait for a batch to fill")
    parser.add_argument("--slots", type=int, default=None, help="requests accepted at once (default: 2 x max-batch)")
    parser.add_argument("--device", default="auto", help="torch device: auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision")
    parser.add_argument("--heartbeat-interval", type=float, default=2.5, help="seconds between heartbeats (match the broker)")
    parser.add_argument("--heartbeat-liveness", type=int, default=4, help="missed broker heartbeats before reconnecting")
    parser.add_argument("--curve-secret", default=None, help="this worker's CurveZMQ secret key file (*.key_secret)")
    parser.add_argument("--curve-server", default=None, help="the broker's public key file (*.key)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log reconnects and batches")


def run(args) -> int:
    import logging
    import signal

    from tpcflow.errors import ConfigError
    from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler, load_predictor
    from tpcflow.serve.mdp.curve import CurveClient
    from tpcflow.serve.mdp.worker import Worker

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    curve = None
    if args.curve_secret or args.curve_server:
        if not (args.curve_secret and args.curve_server):
            raise ConfigError("--curve-secret and --curve-server must be given together")
        curve = CurveClient(args.curve_secret, args.curve_server)
    predict = load_predictor(model_path=args.model, module_path=args.module, device=args.device,
                             precision=None if args.precision == "fp32" else args.precision)
    worker = Worker(args.broker, args.service, CosmicTaggerHandler(predict), max_batch=args.max_batch,
                    max_wait=args.max_wait, slots=args.slots or 2 * args.max_batch,
                    heartbeat_interval=args.heartbeat_interval, heartbeat_liveness=args.heartbeat_liveness, curve=curve)
    device = getattr(predict, "device", "user module")
    print(f"tpcflow worker: service {args.service!r} on {args.broker} ({device})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop(join=False))
    thread = worker.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
    return 0
