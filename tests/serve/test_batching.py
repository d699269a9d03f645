"""The failure rule both services share (serve.batching.run_isolated), in both front ends."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tpcflow.serve.batching import check_knobs, run_isolated
from tpcflow.serve.http.batching import DynamicBatcher
from tpcflow.serve.mdp.batching import Batcher, Job


def test_a_failing_batch_is_run_again_item_by_item():
    calls = []

    def call(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad input")
        return [i.upper() for i in items]

    out = run_isolated(call, ["a", "bad", "c"])
    assert out[0] == "A" and out[2] == "C" and isinstance(out[1], ValueError)
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert run_isolated(call, ["x", "y"]) == ["X", "Y"]  # no failure: one call
    short = run_isolated(lambda items: [], ["p", "q"])
    assert all(isinstance(r, RuntimeError) and "0 results for 1 requests" in str(r) for r in short)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        check_knobs(0, 0.0)
    with pytest.raises(ValueError, match="max_wait must be >= 0"):
        check_knobs(2, -1.0)


def test_both_front_ends_isolate_the_bad_request():
    """One bad request in a batch fails alone, in the HTTP (asyncio) and MDP (thread) batchers."""

    def model(inputs):
        x = inputs[0]
        if (x < 0).any():
            raise ValueError("negative input")
        return [x * 2]

    async def http():
        batcher = DynamicBatcher(model, max_batch=8, max_wait=0.05, name="iso")
        try:
            reqs = [np.full((1, 2), v, np.float32) for v in (1, -1, 3)]
            return await asyncio.gather(*(batcher.submit([r]) for r in reqs), return_exceptions=True)
        finally:
            batcher.close()

    got = asyncio.run(http())
    assert isinstance(got[1], ValueError)
    np.testing.assert_array_equal(got[0][0], [[2, 2]])
    np.testing.assert_array_equal(got[2][0], [[6, 6]])

    done, lock, finished = {}, threading.Lock(), threading.Event()

    def deliver(job, reply):
        with lock:
            done[job.body] = reply
            if len(done) == 3:
                finished.set()

    def handler(bodies):
        return [model([np.asarray(b)])[0].tolist() for b in bodies]

    mdp = Batcher(handler, deliver, max_batch=3, max_wait=0.2)
    try:
        for slot, v in enumerate((1, -1, 3)):
            mdp.put(Job(slot=slot, generation=0, client=b"c", rid=None, body=v))
        assert finished.wait(5)
    finally:
        mdp.close()
    assert done[1] == 2 and done[3] == 6 and isinstance(done[-1], ValueError)
