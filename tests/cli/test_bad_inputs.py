"""Every command, given bad input, exits 1 with a message naming the file, option or endpoint, and no traceback.

Each case runs the real ``tpcflow`` command in a subprocess (a case that wrongly starts a server is
stopped by the timeout and fails), in a scratch folder holding a few bad files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import data_path

CASES = [
    # (command line, what the message must name)
    ("info missing.h5", "missing.h5"),
    ("info junk.h5", "junk.h5"),
    ("iotest data.file=junk.h5", "junk.h5"),
    ("train network.n_initial_filterz=3", "network.n_initial_filters"),
    ("train data.synthetic=true run.output_dir=afile", "run.output_dir=afile"),
    ("train mode.checkpoint_iteration=0", "mode.checkpoint_iteration"),
    ("inference data.file=junk.h5 run.id=none", "mode.weights_location"),
    ("generate adir --events 1 --downsample 3", "adir"),
    ("demo --downsample 5 --out demo_out", "--downsample 0 to 4"),
    ("broker --bind notaurl", "notaurl"),
    ("worker --broker notaurl --module m.py", "notaurl"),
    ("worker --broker tcp://127.0.0.1:5555 --module missing.py", "missing.py"),
    ("services --broker notaurl", "notaurl"),
    ("submit --broker notaurl junk.h5 -o out.h5", "notaurl"),
    ("submit --broker tcp://127.0.0.1:1 junk.h5 -o adir", "adir"),
    ("serve-http --models afile --port 1", "--models afile"),
    ("client --url http://127.0.0.1:1 upload up.json", "nope.pt"),
    ("client --url http://127.0.0.1:1 predict missing.json", "missing.json"),
    ("root-train --files missing.txt --model m.py --labels x --out o", "missing.txt"),
    ("root-train --files hzz.txt --model m.py --labels Jet_Px --out o", "field 'Jet_Px'"),
    ("root-train --files hzz.txt --model m.py --labels NMuonn --out o", "label branch (CLI: --labels)"),
    ("root-predict hzz.root --model adir -o s.root", "adir/params.json"),
    ("root-predict hzz.root --model adir -o s.csv", "-o must end in .root or .parquet"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "junk.h5").write_bytes(os.urandom(4096))
    (d / "afile").write_text("a file where a folder is expected")
    (d / "adir").mkdir()
    (d / "m.py").write_text("def process_net(images):\n    return images\n")
    (d / "hzz.txt").write_text(f"{data_path('root/uproot-HZZ.root')}\n")
    (d / "up.json").write_text(json.dumps({"name": "m", "model": "nope.pt", "params": {"name": "m"}}))
    return d


@pytest.mark.parametrize(("command", "named"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_a_clear_error(scratch, command, named):
    env = dict(os.environ, TPCFLOW_API_TOKEN="t", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "tpcflow.cli.main", *command.split()], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert named in proc.stderr, proc.stderr[-2000:]
