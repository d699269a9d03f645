"""The ``tpcflow`` command: one sub-command per module, imported on demand.

Each module in :data:`COMMANDS` defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``.  Modules keep heavy imports (torch, zmq, fastapi) inside
``run`` so that ``tpcflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from tpcflow import __version__
from tpcflow.errors import TpcflowError

__all__ = ["COMMANDS", "build_parser", "main"]

#: sub-command name -> module path
COMMANDS: dict[str, str] = {
    "demo": "tpcflow.cli.demo",
    "info": "tpcflow.cli.info",
    "generate": "tpcflow.cli.generate",
    "train": "tpcflow.cli.train",
    "iotest": "tpcflow.cli.iotest",
    "inference": "tpcflow.cli.inference",
    "calibrate": "tpcflow.cli.calibrate",
    "broker": "tpcflow.cli.broker",
    "worker": "tpcflow.cli.worker",
    "submit": "tpcflow.cli.submit",
    "services": "tpcflow.cli.services",
    "serve-http": "tpcflow.cli.serve_http",
    "client": "tpcflow.cli.client",
    "root-train": "tpcflow.cli.root_train",
    "root-predict": "tpcflow.cli.root_predict",
    "export": "tpcflow.cli.export",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="tpcflow",
        description="LArTPC and collider deep learning: larcv3 I/O, batch loading, "
        "CosmicTagger UResNet training/inference, MDP and HTTP inference services.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tpcflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modpath in COMMANDS.items():
        mod = importlib.import_module(modpath)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tpcflow`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # SIGTERM (a batch system's kill, a container stop) unwinds like Ctrl-C, so that temporary
    # files are removed; commands that stop a server on SIGTERM install their own handler
    previous = _terminate_as_interrupt()
    try:
        return int(args._run(args) or 0)
    except TpcflowError as err:
        print(f"tpcflow {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a file or folder the system refused: its message names the path, no traceback
        print(f"tpcflow {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tpcflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"tpcflow {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM (a BaseException, like KeyboardInterrupt)."""


def _terminate_as_interrupt():
    """Make SIGTERM raise :class:`_Terminated`; return the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
