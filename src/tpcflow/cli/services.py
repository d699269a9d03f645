"""``tpcflow services``: what an MDP broker serves, from its MMI statistics (argument parsing only)."""

from __future__ import annotations

HELP = "list the services of an MDP broker with their worker slots, queue and request counts (MMI)"
DESCRIPTION = (
    "Ask a tpcflow broker (`tpcflow broker`, `tpcflow worker --bind`) for its MMI statistics "
    "(mmi.stats) and print one row per service: slots (idle/busy), queued requests, requests, "
    "served, errors, re-dispatched and expired. The broker counts MDP connections: one tpcflow worker "
    "process holds --slots of them (2 x --max-batch by default), a majortomo worker one; the JSON key "
    "stays 'workers', MDP's name for a connection. --json prints the raw statistics. Exit status 1 if "
    "the broker does not answer within --timeout."
)

COLUMNS = ("workers", "idle", "busy", "queue", "requests", "served", "errors", "redispatched", "expired")
#: table headers: the broker's "workers" are MDP connections, which a tpcflow worker holds several of
HEADERS = {"workers": "slots"}


def add_arguments(parser) -> None:
    from tpcflow.cli._ssh import add_ssh_arguments

    parser.add_argument("--broker", default="tcp://127.0.0.1:5555", help="broker endpoint")
    parser.add_argument("service", nargs="*", help="only these services (default: all)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker's answer")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument("--curve-secret", default=None, help="this client's CurveZMQ secret key file (*.key_secret)")
    parser.add_argument("--curve-server", default=None, help="the broker's public key file (*.key)")
    add_ssh_arguments(parser)


def format_table(stats: dict) -> str:
    """Render ``mmi.stats`` output as an aligned text table (one row per service)."""
    services = stats.get("services", {})
    if not services:
        return "no services"
    rows = [("service", *(HEADERS.get(c, c) for c in COLUMNS))] + [(name, *(str(s.get(c, "")) for c in COLUMNS))
                                      for name, s in sorted(services.items())]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                     for r in rows)


def run(args) -> int:
    import json

    from tpcflow.cli._ssh import ssh_from_args
    from tpcflow.errors import ConfigError
    from tpcflow.serve.mdp.client import Client
    from tpcflow.serve.mdp.curve import CurveClient

    if bool(args.curve_secret) != bool(args.curve_server):
        raise ConfigError("--curve-secret and --curve-server must be given together")
    curve = CurveClient(args.curve_secret, args.curve_server) if args.curve_secret else None
    ssh = ssh_from_args(args)
    try:
        with Client(args.broker, timeout=args.timeout, retries=0, curve=curve, ssh=ssh) as client:
            stats = client.stats(*args.service, timeout=args.timeout)
    finally:
        if ssh is not None:
            ssh.close()
    print(json.dumps(stats, indent=2, sort_keys=True) if args.json else format_table(stats))
    return 0
