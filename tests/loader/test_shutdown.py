"""Clean shutdown: no worker process or loader thread is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from loader_testdata import write_file

from tpcflow.loader import BatchLoader, ThreadProcessor, WorkerDiedError, cosmic_tagger_config

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_file(tmp_path_factory.mktemp("shutdown") / "s.h5", 9, seed=2)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (or is a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("tpcflow-loader")]


def test_stop_manager_leaves_nothing(path):
    proc = ThreadProcessor(cosmic_tagger_config([path], num_threads=2))
    proc.start_manager(2)
    proc.release_data(proc.next_filled(timeout=60))
    workers = list(proc._rt.workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    pids = proc._rt.worker_pids
    proc.stop_manager()
    assert all(_gone(pid, timeout=0.5) for pid in pids)
    assert not _loader_threads()
    proc.stop_manager()  # idempotent


def test_exception_in_training_loop_stops_workers(path):
    loader = BatchLoader(cosmic_tagger_config([path], num_threads=2), batch_size=2)

    def train():
        for i, _ in enumerate(loader):
            if i == 1:
                raise RuntimeError("loss is nan")

    with pytest.raises(RuntimeError, match="nan"):
        train()
    assert loader.processor._rt.stopping
    assert len(loader.processor._rt.worker_pids) == 2
    assert all(_gone(pid, timeout=0.5) for pid in loader.processor._rt.worker_pids) and not _loader_threads()
    # the loader can be iterated again: the workers restart and the epoch starts over
    assert len(list(loader)) == len(loader)
    loader.close()


def test_killed_worker_raises_instead_of_hanging(path):
    proc = ThreadProcessor(cosmic_tagger_config([path], num_threads=2, random_access=0))
    proc.start_manager(2)
    try:
        w = proc._rt.workers[0]
        os.kill(w.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(WorkerDiedError, match="exit code -9"):
            for _ in range(1000):
                proc.release_data(proc.next_filled(timeout=30))
        assert time.monotonic() - t0 < 30
    finally:
        proc.stop_manager()
    assert not _loader_threads()


SCRIPT = """
import faulthandler, os, signal, sys, time
from tpcflow.loader import BatchLoader, cosmic_tagger_config
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks if this hangs
# Ctrl-C as in a terminal: a runner that starts the tests in the background (nohup ... &) passes SIGINT
# ignored, and Python then keeps it ignored (this is what made the test time out in such a run)
signal.signal(signal.SIGINT, signal.default_int_handler)
if __name__ == "__main__":
    loader = BatchLoader(cosmic_tagger_config([sys.argv[1]], num_threads=2), batch_size=2)
    it = iter(loader)
    next(it)
    print(" ".join(str(pid) for pid in loader.processor._rt.worker_pids), flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)          # no stop_manager: the finalizer must clean up
    while True:              # wait for Ctrl-C while "training"
        for batch in loader:
            time.sleep(0.01)
"""


@pytest.mark.parametrize("how", ["exit", "sigint"])
def test_interpreter_exit_and_ctrl_c(path, tmp_path, how):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, str(script), str(path), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        assert len(pids) == 2, p.stderr.read() if p.poll() is not None else "no pids"
        if how == "sigint":
            time.sleep(0.3)
            p.send_signal(signal.SIGINT)
        try:
            code = p.wait(timeout=60)
        except subprocess.TimeoutExpired:  # fail with every thread's stack
            p.send_signal(signal.SIGUSR1)
            time.sleep(2)
            p.kill()
            pytest.fail(f"the script did not exit within 60 s ({how}); its threads:\n{p.communicate()[1]}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read()
    if how == "exit":
        assert code == 0, err
    else:
        assert code != 0 and "KeyboardInterrupt" in err, (code, err)
    assert all(_gone(pid, timeout=20) for pid in pids), f"worker processes left running; stderr: {err}"


def test_dropping_the_processor_stops_workers(path):
    import gc

    proc = ThreadProcessor(cosmic_tagger_config([path], num_threads=2))
    proc.start_manager(2)
    proc.release_data(proc.next_filled(timeout=60))
    pids = list(proc._rt.worker_pids)
    del proc
    gc.collect()
    assert all(_gone(pid) for pid in pids)
    deadline = time.monotonic() + 5
    while _loader_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _loader_threads()
