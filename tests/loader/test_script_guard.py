"""A script that starts the loader without an ``if __name__ == "__main__"`` guard gets an error
that says so, not a bare worker death (worker processes re-import the main script)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tpcflow.sim.sbnd import generate_file


def test_unguarded_script_gets_a_clear_hint(tmp_path):
    data = generate_file(tmp_path / "ev.h5", 2, seed=3, downsample=3)
    script = tmp_path / "train_noguard.py"
    script.write_text(textwrap.dedent(f"""
        from tpcflow.loader import BatchLoader, cosmic_tagger_config
        cfg = cosmic_tagger_config([{str(data)!r}], downsample=0, num_threads=1)
        for batch in BatchLoader(cfg, batch_size=1):
            pass
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "WorkerDiedError" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr
