"""Two CPU ranks (gloo on 127.0.0.1): DDP gradients equal one process on the global minibatch."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp
from conftest import TINY_NETWORK

from tpcflow.config import load_config
from tpcflow.train.loop import train

# no BatchNorm and a plain-mean loss: the mean of the per-rank gradients is then exactly the
# gradient of the global minibatch, so 2 ranks x 1 image must match 1 process x 2 images
COMMON = [
    "data.synthetic=true",
    "data.downsample=4",
    "data.synthetic_events=4",
    "data.shuffle=false",
    "run.minibatch_size=2",
    "run.iterations=2",
    "run.aux_iterations=0",
    "run.progress=false",
    "run.num_threads=1",
    *TINY_NETWORK,
    "network.normalization=none",
    "mode.optimizer.loss_balance_scheme=none",
    "mode.optimizer.name=sgd",
    "mode.optimizer.learning_rate=0.2",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    try:
        cfg = load_config(COMMON + [f"run.output_dir={out_dir}", "run.id=ddp"])
        res = train(cfg, echo=lambda *a, **k: None)
        params = {k: v.detach().numpy().copy() for k, v in res.model.state_dict().items()}  # by value
        queue.put((rank, res.losses, params, res.metrics, res.is_main))
    except BaseException as err:  # hand the failure to the parent instead of hanging it
        queue.put((rank, repr(err), None, None, None))
        raise


def test_two_cpu_ranks_match_single_process(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = sorted((queue.get(timeout=150) for _ in procs), key=lambda r: r[0])
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank, losses, params, _m, _main in results:
        assert params is not None, f"rank {rank} failed: {losses}"
    (_, loss0, p0, m0, main0), (_, loss1, p1, m1, main1) = results
    assert main0 and not main1
    assert loss0 == loss1 and m0 == m1  # metrics all-reduced
    for k in p0:
        np.testing.assert_array_equal(p0[k], p1[k])  # the ranks hold the same weights
    # only rank 0 wrote the run directory's files
    assert (tmp_path / "ddp" / "checkpoints" / "checkpoint-00000002.pt").exists()

    single = train(
        load_config(COMMON + [f"run.output_dir={tmp_path}", "run.id=single"]),
        echo=lambda *a, **k: None,
    )
    ps = single.model.state_dict()
    for k in p0:
        torch.testing.assert_close(torch.from_numpy(p0[k]), ps[k], rtol=1e-4, atol=1e-6)
    assert [round(x, 4) for x in loss0] == [round(x, 4) for x in single.losses]
