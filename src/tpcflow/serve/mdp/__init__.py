"""ZeroMQ Majordomo (MDP/0.2, RFC 18) inference service: broker, workers, clients.

* :class:`Broker` (``tpcflow broker``), :class:`Worker` (``tpcflow worker``),
  :class:`Client` (``tpcflow submit``); workers in the broker's process,
  :meth:`Broker.add_local_worker` in :mod:`.local` (``tpcflow worker --bind``);
* :mod:`.broker_state` the broker's state machine, :mod:`.services` its bookkeeping and MMI,
  :mod:`.protocol` wire constants and validation, :mod:`.curve` CurveZMQ security,
  :mod:`.batching` dynamic batching, :mod:`.cosmic` the cosmic-tagger payload and model runner,
  :mod:`.submit` larcv3 file submission, :mod:`.demo` an all-in-one run for ``tpcflow demo``.
"""

from tpcflow.serve.mdp.broker import Broker
from tpcflow.serve.mdp.client import Client
from tpcflow.serve.mdp.worker import Worker

__all__ = ["Broker", "Client", "Worker"]
