"""The tpcflow command lists its sub-commands and reports errors without tracebacks."""

from __future__ import annotations

import pytest

from tpcflow.cli.main import COMMANDS, build_parser, main


def test_help_lists_every_built_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    parser = build_parser()
    built = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public accessor
    assert built, "no sub-command could be imported"
    for name in built:
        assert name in COMMANDS
        assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: tpcflow" in capsys.readouterr().out
