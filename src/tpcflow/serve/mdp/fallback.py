"""The local fallback of ``tpcflow submit --fallback local``: the service run in this process.

When the broker or the service cannot be reached within the deadline
(:class:`~tpcflow.errors.ServiceUnavailableError`: no reply after the retries, no worker), or goes
away during the run, the events not yet answered are run by the same checkpoint or user module,
loaded as a worker loads it (:func:`tpcflow.serve.mdp.service.load_service`) and called through the
same handler (:class:`tpcflow.serve.mdp.cosmic.CosmicTaggerHandler`), one event per call.  The
replies are the frames a worker sends, so ``tpcflow submit`` checks and writes them as served
replies: the output equals a served run of a worker with ``--max-batch 1`` bit for bit (a larger
worker batch may differ in the last bits of the scores).  Model as CMS SONIC's fallback server:
on the GPU when there is one, else on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["LocalFallback"]

log = logging.getLogger(__name__)


@dataclass
class LocalFallback:
    """A service to run in-process: exactly one of ``model_path`` (checkpoint or TorchScript) and ``module_path``.

    Attributes
    ----------
    device : str or None
        ``cpu``, ``cuda``, ... (None: the GPU when there is one, else the CPU).
    precision : str or None
        As ``tpcflow worker --precision``.
    """

    model_path: str | None = None
    module_path: str | None = None
    device: str | None = None
    precision: str | None = None
    _handler: object = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        return f"{self.model_path or self.module_path} in this process"

    def handler(self):
        """The worker's handler for this model, loaded on first use.

        Raises
        ------
        ConfigError
            Neither or both of the paths, a missing file, a module without ``process_net``.
        """
        if self._handler is None:
            from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler
            from tpcflow.serve.mdp.service import load_service

            predict, spec = load_service(model_path=self.model_path, module_path=self.module_path,
                                         device=self.device, precision=self.precision)
            self._handler = CosmicTaggerHandler(predict, spec)
        return self._handler

    def map(self, service: str, bodies: Iterable, *, max_in_flight: int = 1) -> Iterator[tuple[object, list]]:
        """:meth:`tpcflow.serve.mdp.Client.map` in-process: yield ``(key, reply frames)`` per ``(key, body)``.

        Raises
        ------
        ServiceError
            The model's error for one request (as a worker's error reply would say it).
        """
        yield from self.handler().map(service, bodies, f"local fallback {self.describe()}")

    def close(self) -> None:
        self._handler = None
