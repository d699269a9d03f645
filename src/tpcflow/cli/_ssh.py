"""The ``--ssh`` options of the commands that connect to a broker (worker, submit, services)."""

from __future__ import annotations


def add_ssh_arguments(parser) -> None:
    group = parser.add_argument_group("ssh tunnel (a broker behind a login node)")
    group.add_argument("--ssh", default=None, metavar="USER@HOST[:PORT]",
                       help="reach the broker through an ssh tunnel to this host; --broker is then the broker's "
                       "address as seen from that host (e.g. tcp://127.0.0.1:5555 for one on the login node)")
    group.add_argument("--ssh-key", default=None, metavar="FILE", help="private key for the ssh login")
    group.add_argument("--ssh-paramiko", action="store_true",
                       help="use paramiko instead of the ssh command (no ssh config or agent; an unknown host key is "
                       "accepted with a warning)")


def ssh_from_args(args):
    """The :class:`~tpcflow.serve.mdp.ssh.SSHTunnel` of the options, or None without ``--ssh``.

    Raises
    ------
    ConfigError
        ``--ssh-key`` or ``--ssh-paramiko`` without ``--ssh``; a malformed server or missing key.
    """
    from tpcflow.errors import ConfigError

    if args.ssh is None:
        if args.ssh_key or args.ssh_paramiko:
            raise ConfigError("--ssh-key and --ssh-paramiko go with --ssh USER@HOST")
        return None
    from tpcflow.serve.mdp.ssh import SSHTunnel

    return SSHTunnel(args.ssh, keyfile=args.ssh_key, paramiko=args.ssh_paramiko or None)
