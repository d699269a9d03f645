"""The batching rule both services share: knobs, validation, and what a failed batch means.

Two front ends gather requests: the HTTP server's :class:`~tpcflow.serve.http.batching.DynamicBatcher`
on an asyncio event loop, and the MDP worker's :class:`~tpcflow.serve.mdp.batching.Batcher` on a
thread fed by the socket thread.  They differ only in how requests arrive; both are configured by
the same two knobs and call :func:`run_isolated`, so a batch fails the same way in both.

Knobs: ``max_batch`` (most requests, or rows for HTTP, in one network call) and ``max_wait``
(seconds to wait for a batch to fill after its first request).  The HTTP server's public
settings keep Triton's names (``max_batch_size``, ``max_batch_delay_ms``), which map onto them.

The failure rule, chosen on purpose: if the call on the whole batch raises (or returns the
wrong number of results), each request is run again **alone**, so that one bad request (a
malformed input, a shape the network refuses) fails only itself.  The cost, N single calls,
is paid only on failure; a network that fails on every input fails each request with its own
error.  Source: Triton's dynamic batcher isolates failing requests the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["check_knobs", "run_isolated"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def check_knobs(max_batch: int, max_wait: float) -> tuple[int, float]:
    """Validate and return ``(max_batch, max_wait)``.

    Raises
    ------
    ValueError
        If ``max_batch < 1`` or ``max_wait < 0``.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, but got max_batch={max_batch}")
    if not max_wait >= 0:
        raise ValueError(f"max_wait must be >= 0, but got max_wait={max_wait}")
    return int(max_batch), float(max_wait)


def run_isolated(call: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T]) -> list[R | Exception]:
    """Return ``call(items)``; if it fails, one result or Exception per item from ``call([item])``.

    ``call`` takes a batch and returns one result per item, or an Exception in place of a
    result for an item it could not process.  This function never raises an ``Exception``.
    """
    try:
        results = list(call(items))
        if len(results) != len(items):
            raise RuntimeError(f"batch call returned {len(results)} results for {len(items)} requests")
        return results
    except Exception as err:
        if len(items) == 1:
            return [err]
        log.warning("batch of %d requests failed (%s: %s); running each alone", len(items), type(err).__name__, err)
        return [run_isolated(call, [item])[0] for item in items]
