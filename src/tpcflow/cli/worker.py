"""``tpcflow worker``: serve a network for an MDP broker (argument parsing only)."""

from __future__ import annotations

from tpcflow.config.schema import PRECISION_ALIASES, PRECISIONS

HELP = "serve a cosmic-tagger network (checkpoint, TorchScript or user module) for an MDP broker"
DESCRIPTION = (
    "Register SERVICE with the broker and answer requests (the cosmic-tagger payload: 3 sparse "
    "planes in, per-voxel labels and scores out) with dynamic batching. The network is a tpcflow "
    "checkpoint / TorchScript file (--model) or a Python file defining process_net(images) -> "
    "outputs (--module), where images is float32 [B, 3, H, W]. Reconnects after a broker restart. "
    "With --bind ENDPOINT the worker hosts the broker itself: clients and other workers connect to "
    "ENDPOINT as to `tpcflow broker`, and this worker is handed its requests by a function call, with "
    "no loopback hop (the usual set-up on a GPU node)."
)

DEFAULT_BROKER = "tcp://127.0.0.1:5555"


def add_arguments(parser) -> None:
    from tpcflow.cli._ssh import add_ssh_arguments

    parser.add_argument("--broker", default=None, help=f"broker endpoint to connect to (default {DEFAULT_BROKER})")
    parser.add_argument("--bind", default=None,
                        help="host the broker in this process, bound at this endpoint (instead of --broker)")
    parser.add_argument("--service", default="cosmic_tagger", help="service name to register")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", default=None, help="tpcflow checkpoint or TorchScript file")
    src.add_argument("--module", default=None, help="Python file defining process_net(images) -> outputs")
    parser.add_argument("--max-batch", type=int, default=4, help="largest batch of events per forward pass")
    parser.add_argument("--max-wait", type=float, default=0.01, help="seconds to wait for a batch to fill")
    parser.add_argument("--slots", type=int, default=None, help="requests accepted at once (default: 2 x max-batch)")
    parser.add_argument("--device", default="auto", help="torch device: auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=[*PRECISIONS, *PRECISION_ALIASES], default="float32",
                        help="autocast precision: float32, bfloat16, or mixed (float16 on CUDA, bfloat16 on CPU); "
                             "fp32/bf16/fp16 are aliases")
    parser.add_argument("--heartbeat-interval", type=float, default=2.5, help="seconds between heartbeats (match the broker)")
    parser.add_argument("--heartbeat-liveness", type=int, default=4, help="missed broker heartbeats before reconnecting")
    parser.add_argument("--curve-secret", default=None,
                        help="CurveZMQ secret key file (*.key_secret): this worker's, or with --bind the broker's")
    parser.add_argument("--curve-server", default=None, help="the broker's public key file (*.key); not with --bind")
    hosted = parser.add_argument_group("hosted broker (with --bind)")
    hosted.add_argument("--curve-allowed", default=None,
                        help="directory of public *.key files of the clients and workers allowed to connect")
    hosted.add_argument("--curve-workers", default=None,
                        help="directory of public keys allowed to register as workers (default: any allowed key)")
    hosted.add_argument("--unknown-service-timeout", type=float, default=0.0,
                        help="seconds a request to a service without workers waits before a 404 error reply")
    hosted.add_argument("--busy-worker-timeout", type=float, default=120.0,
                        help="seconds a busy remote worker may stay silent before its request is re-dispatched")
    hosted.add_argument("--max-attempts", type=int, default=3,
                        help="workers that may die on one request before it fails with a 500 error reply")
    add_ssh_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log reconnects and batches")


def _check(args) -> None:
    from tpcflow.errors import ConfigError

    if args.bind is None:
        hosted = [f for f in ("curve_allowed", "curve_workers") if getattr(args, f)]
        if hosted:
            raise ConfigError(f"--{hosted[0].replace('_', '-')} configures a hosted broker: it needs --bind")
        if bool(args.curve_secret) != bool(args.curve_server):
            raise ConfigError("--curve-secret and --curve-server must be given together")
        return
    if args.broker is not None:
        raise ConfigError("give either --broker (connect to a broker) or --bind (host one), not both")
    if args.curve_server:
        raise ConfigError("--curve-server names a remote broker's key: it does not go with --bind")
    if args.ssh:
        raise ConfigError("--ssh reaches a remote broker: it does not go with --bind")


def run(args) -> int:
    import logging
    import signal

    import zmq

    from tpcflow.cli._ssh import ssh_from_args
    from tpcflow.cli.broker import build_broker
    from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler
    from tpcflow.serve.mdp.curve import CurveClient
    from tpcflow.serve.mdp.service import load_service
    from tpcflow.serve.mdp.worker import Worker

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _check(args)
    predict, spec = load_service(model_path=args.model, module_path=args.module, device=args.device,
                                 precision=args.precision)
    handler = CosmicTaggerHandler(predict, spec)
    slots = args.slots or 2 * args.max_batch
    device = getattr(predict, "device", "user module")
    if args.bind is not None:
        broker = build_broker(args, zmq.Context(), args.bind)
        broker.add_local_worker(args.service, handler, slots=slots, max_batch=args.max_batch, max_wait=args.max_wait)
        server, where = broker, f"hosting the broker on {broker.endpoint}{' (CURVE)' if args.curve_secret else ''}"
    else:
        endpoint = args.broker or DEFAULT_BROKER
        curve = CurveClient(args.curve_secret, args.curve_server) if args.curve_secret else None
        ssh = ssh_from_args(args)
        server = Worker(endpoint, args.service, handler, max_batch=args.max_batch, max_wait=args.max_wait, slots=slots,
                        heartbeat_interval=args.heartbeat_interval, heartbeat_liveness=args.heartbeat_liveness,
                        curve=curve, ssh=ssh)
        where = f"on {endpoint}" + (f" through ssh {ssh.server}" if ssh is not None else "")
    print(f"tpcflow worker: service {args.service!r} {where} ({device})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(join=False))
    thread = server.start(freeze_gc=True) if args.bind is not None else server.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    error = getattr(server, "error", None)
    if error is not None:  # the broker refused it: say so and fail, never idle looking healthy
        raise error
    return 0
