"""``tpcflow broker``: run an MDP/0.2 broker (argument parsing only)."""

from __future__ import annotations

HELP = "run an MDP/0.2 (Majordomo) broker for inference workers and clients"
DESCRIPTION = (
    "Run a ZeroMQ Majordomo (MDP/0.2, RFC 18) broker: named services, LRU dispatch, heartbeats, "
    "MMI (mmi.service, mmi.services, mmi.stats), re-dispatch of requests whose worker died, "
    "optional CurveZMQ authentication. Stop with Ctrl-C."
)


def add_arguments(parser) -> None:
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint to bind")
    parser.add_argument("--heartbeat-interval", type=float, default=2.5, help="seconds between heartbeats")
    parser.add_argument("--heartbeat-liveness", type=int, default=4,
                        help="heartbeats an idle worker may miss before it is dead")
    parser.add_argument("--busy-worker-timeout", type=float, default=120.0,
                        help="seconds a busy worker may stay silent (majortomo-style workers send no heartbeats "
                             "while busy) before it is dead and its request re-dispatched")
    parser.add_argument("--unknown-service-timeout", type=float, default=0.0,
                        help="seconds a request to a service without workers waits before a 404 error reply (0: at once)")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="workers that may die on one request before it fails with a 500 error reply")
    parser.add_argument("--curve-secret", default=None,
                        help="broker's CurveZMQ secret key file (*.key_secret); enables encryption + authentication")
    parser.add_argument("--curve-allowed", default=None,
                        help="directory of public *.key files of the clients and workers allowed to connect")
    parser.add_argument("--curve-workers", default=None,
                        help="directory of public keys allowed to register as workers (default: any allowed key)")
    parser.add_argument("--stats-every", type=float, default=0.0, help="log service statistics every N seconds (0: never)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every worker registration and expiry")


def build_broker(args, ctx, bind: str):
    """Return a :class:`~tpcflow.serve.mdp.broker.Broker` from the broker options of ``args``.

    Shared by ``tpcflow broker`` and ``tpcflow worker --bind``; raises ``ConfigError`` for an
    incomplete CURVE key set.
    """
    from tpcflow.errors import ConfigError
    from tpcflow.serve.mdp.broker import Broker
    from tpcflow.serve.mdp.curve import CurveServer

    curve = None
    if args.curve_secret or args.curve_allowed:
        if not (args.curve_secret and args.curve_allowed):
            raise ConfigError("--curve-secret and --curve-allowed must be given together")
        curve = CurveServer(args.curve_secret, args.curve_allowed, worker_dir=args.curve_workers, context=ctx)
    return Broker(bind, heartbeat_interval=args.heartbeat_interval, heartbeat_liveness=args.heartbeat_liveness,
                  busy_worker_timeout=args.busy_worker_timeout, unknown_service_timeout=args.unknown_service_timeout, max_attempts=args.max_attempts,
                  context=ctx, curve=curve)


def run(args) -> int:
    import json
    import logging
    import signal
    import time

    import zmq

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    broker = build_broker(args, zmq.Context(), args.bind)
    print(f"tpcflow broker: listening on {broker.endpoint}{' (CURVE)' if args.curve_secret else ''}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop(join=False))
    thread = broker.start(freeze_gc=True)
    try:
        last = time.monotonic()
        while thread.is_alive():
            thread.join(0.5)
            if args.stats_every and time.monotonic() - last >= args.stats_every:
                last = time.monotonic()
                print(json.dumps(broker.stats(), sort_keys=True), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0
