"""An in-process deployment: a broker with the network as its local worker, submit, stop.

One call serves a checkpoint on ``tcp://127.0.0.1`` (ephemeral port), segments larcv3 files
through it exactly as ``tpcflow submit`` does, and stops the broker: for notebooks, tests and
the ``serve`` stage of :mod:`tpcflow.workflows.demo`.
"""

from __future__ import annotations

import zmq

from tpcflow.io.products import PREDICTION_PRODUCER
from tpcflow.serve.mdp.broker import Broker
from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler
from tpcflow.serve.mdp.service import load_service
from tpcflow.serve.mdp.submit import SubmitResult, submit_files

__all__ = ["segment_via_broker"]


def segment_via_broker(
    checkpoint=None,
    inputs=(),
    output=None,
    *,
    module=None,
    service: str = "cosmic_tagger",
    max_batch: int = 2,
    max_wait: float = 0.01,
    device: str | None = None,
    precision: str | None = None,
    producer: str = "sbndwire",
    out_producer: str = PREDICTION_PRODUCER,
    progress: bool = True,
    root_out=None,
) -> SubmitResult:
    """Serve ``checkpoint`` (or ``module``'s ``process_net``) and segment ``inputs`` into ``output``.

    Starts a :class:`Broker` on ``tcp://127.0.0.1`` (ephemeral port) in a daemon thread with the
    network as a local worker (:meth:`Broker.add_local_worker`, as ``tpcflow worker --bind`` runs
    it), runs :func:`~tpcflow.serve.mdp.submit.submit_files`, then stops the broker, also on error.

    Parameters
    ----------
    checkpoint : path
        tpcflow checkpoint or TorchScript file (``tpcflow.models.checkpoint.load_model``).
    inputs : path or list of paths
        larcv3 files with ``sparse2d/<producer>``.
    output : path
        larcv3 file to write (``sparse2d/<out_producer>`` and ``sparse2d/<out_producer>_score``).

    Returns
    -------
    SubmitResult
    """
    predict, spec = load_service(model_path=checkpoint, module_path=module, device=device, precision=precision)
    ctx = zmq.Context()
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=0.5, context=ctx)
    broker.add_local_worker(service, CosmicTaggerHandler(predict, spec), max_batch=max_batch, max_wait=max_wait,
                            slots=2 * max_batch)
    broker.start()
    try:
        return submit_files(broker.endpoint, service, inputs, output, producer=producer,
                            out_producer=out_producer, max_in_flight=4 * max_batch, progress=progress, context=ctx,
                            root_out=root_out)
    finally:
        broker.stop()
        ctx.term()
