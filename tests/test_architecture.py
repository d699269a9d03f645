"""The layer contracts of .importlinter hold: imports point downward, io never imports torch,
serve never imports train."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_import_contracts_kept():
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename='.importlinter'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout


def test_io_import_does_not_load_torch():
    code = "import sys, tpcflow.io, tpcflow.io.products; sys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
