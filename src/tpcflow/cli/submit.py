"""``tpcflow submit``: segment larcv3 files through an MDP service (argument parsing only)."""

from __future__ import annotations

HELP = "send larcv3 or larcv1/larcv2 ROOT events to an MDP service and write its predictions as larcv3 sparse2d"
DESCRIPTION = (
    "Read the sparse2d planes (larcv3) or the image2d planes (larcv1/larcv2 ROOT: their non-zero pixels) "
    "of every entry of the inputs, send them to SERVICE with many "
    "requests in flight, and write each output of the service (CosmicTagger: labels and scores) at the "
    "input voxels as larcv3 sparse2d with the input's "
    "event ids, in entry order. Interrupted runs resume: finished entries are kept in OUT.h5.partial/ "
    "and skipped when the same command is run again; OUT.h5 appears atomically at the end."
)


def add_arguments(parser) -> None:
    from tpcflow.cli._ssh import add_ssh_arguments
    from tpcflow.io.products import PREDICTION_PRODUCER

    parser.add_argument("inputs", nargs="+", metavar="IN", help="larcv3 (.h5) or larcv1/larcv2 ROOT input files")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="larcv3 file to write")
    parser.add_argument("--broker", default="tcp://127.0.0.1:5555", help="broker endpoint")
    parser.add_argument("--kserve", default=None, metavar="URL",
                        help="send the events to a KServe v2 server (Triton, tpcflow serve-http) instead of a broker; "
                        "--service names its model (exported by tpcflow export --triton)")
    parser.add_argument("--service", default="cosmic_tagger", help="service name (with --kserve: the model name)")
    parser.add_argument("--producer", default="sbndwire",
                        help="product(s) sent, comma-separated, planes in that order: larcv3 PRODUCER (sparse2d), "
                        "sparse2d/PRODUCER or image2d/PRODUCER; ROOT: image2d producers, e.g. wire,infill")
    parser.add_argument("--output-producer", default=PREDICTION_PRODUCER,
                        help="sparse2d producer of the outputs: labels here, every other output in <name>_<output> "
                        "(CosmicTagger scores: <name>_score)")
    parser.add_argument("--root-out", default=None, metavar="FILE.root",
                        help="also write a flat ROOT TTree 'predictions' (a friend tree of the inputs, by entry)")
    parser.add_argument("--max-in-flight", type=int, default=16, help="requests outstanding at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each reply before retrying")
    parser.add_argument("--retries", type=int, default=2, help="extra attempts per request after a timeout")
    parser.add_argument("--wait-service", type=float, default=30.0,
                        help="seconds to wait for a worker of SERVICE (asked by MMI); 0: do not ask, "
                        "for brokers without MMI such as majortomo's")
    parser.add_argument("--compression", choices=["none", "lz4", "zstd"], default="lz4", help="request compression")
    parser.add_argument("--curve-secret", default=None, help="this client's CurveZMQ secret key file (*.key_secret)")
    parser.add_argument("--curve-server", default=None, help="the broker's public key file (*.key)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_ssh_arguments(parser)
    fb = parser.add_argument_group("local fallback")
    fb.add_argument("--fallback", choices=["none", "local"], default="none",
                    help="local: when the broker or the service cannot be reached within --timeout (after --retries) "
                    "or goes away, run the events left in this process with --model/--module (a warning says so)")
    fb.add_argument("--model", default=None, metavar="CKPT", help="checkpoint or TorchScript file the service runs")
    fb.add_argument("--module", default=None, metavar="USER.py", help="user module (process_net) the service runs")
    fb.add_argument("--device", default=None, help="device of the local fallback (default: the GPU if any, else cpu)")
    fb.add_argument("--precision", default=None, help="precision of the local fallback (as tpcflow worker)")


def run(args) -> int:
    from tpcflow.cli._ssh import ssh_from_args
    from tpcflow.errors import ConfigError
    from tpcflow.serve.mdp.curve import CurveClient
    from tpcflow.serve.mdp.submit import submit_files

    curve = None
    if args.curve_secret or args.curve_server:
        if not (args.curve_secret and args.curve_server):
            raise ConfigError("--curve-secret and --curve-server must be given together")
        curve = CurveClient(args.curve_secret, args.curve_server)
    fallback = None
    if args.fallback == "local":
        from tpcflow.serve.mdp.fallback import LocalFallback

        if (args.model is None) == (args.module is None):
            raise ConfigError("--fallback local runs the service here: give exactly one of --model CKPT or "
                              "--module USER.py (what the workers run)")
        fallback = LocalFallback(model_path=args.model, module_path=args.module, device=args.device,
                                 precision=args.precision)
    elif args.model or args.module:
        raise ConfigError("--model/--module are for the local fallback: add --fallback local")
    ssh = ssh_from_args(args)
    try:
        res = submit_files(args.broker, args.service, args.inputs, args.output, producer=args.producer,
                           out_producer=args.output_producer, max_in_flight=args.max_in_flight, timeout=args.timeout,
                           retries=args.retries, wait_service=args.wait_service,
                           compression=None if args.compression == "none" else args.compression,
                           progress=not args.no_progress, curve=curve, root_out=args.root_out, fallback=fallback,
                           kserve=args.kserve, ssh=ssh)
    finally:
        if ssh is not None:
            ssh.close()
    local = f", {res.local} RUN LOCALLY by the fallback" if res.local else ""
    print(f"tpcflow submit: wrote {res.entries} entries to {res.output} "
          f"({res.sent} sent, {res.skipped} resumed{local}) in {res.seconds:.1f} s")
    return 0
