"""``tpcflow submit --kserve URL``: the cosmic-tagger requests answered by a KServe v2 server.

Any server that speaks the KServe v2 inference protocol with the binary tensor extension (NVIDIA
Triton, SuperSONIC's Triton behind Envoy, ``tpcflow serve-http``) and holds a cosmic tagger
exported by ``tpcflow export --triton``: input ``[B, 3, H, W]`` float32 pooled charge, output
logits ``[B, 3, 3, H, W]``.  Each event goes the way a worker takes it
(:class:`~tpcflow.serve.mdp.cosmic.CosmicTaggerHandler` over
:class:`~tpcflow.serve.mdp.service.PooledPredictor`): scattered into CosmicTagger's image layout,
pooled to the model's input size, and each voxel given its pooled pixel's label and score, only
the network runs on the server.  So ``tpcflow submit`` writes the same larcv3 output as through
the broker.  Requests go one event at a time.

Source: KServe v2 inference protocol (``/v2/models/<name>``, ``/v2/models/<name>/infer``),
Triton's binary tensor data extension.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator

import numpy as np

from tpcflow.errors import ServiceError, ServiceUnavailableError

__all__ = ["KServeService"]


class _RemoteNetwork:
    """The network on a KServe server: ``runner(pooled [B, P, H, W]) -> logits [B, C, P, H, W]`` (torch)."""

    device = "cpu"

    def __init__(self, client, model: str):
        self.client, self.model = client, model

    def __call__(self, images):
        import torch

        x = images.cpu().numpy() if hasattr(images, "cpu") else np.asarray(images)
        (logits,) = self.client.infer(self.model, np.ascontiguousarray(x, np.float32))[:1]
        return torch.from_numpy(np.array(logits, np.float32))


class KServeService:
    """A :meth:`tpcflow.serve.mdp.Client.map` look-alike over a KServe v2 server (see the module docstring).

    Parameters
    ----------
    url : str
        The server, e.g. ``http://127.0.0.1:8000`` (Triton) or ``http://127.0.0.1:8083``.
    model : str
        The model name (``tpcflow submit --service``).
    timeout : float
        Seconds per HTTP request.
    """

    def __init__(self, url: str, model: str, *, timeout: float = 60.0):
        from tpcflow.serve.http.client import TFaaSClient

        self.url, self.model = url.rstrip("/"), model
        self.client = TFaaSClient(self.url, timeout=timeout)
        self._handler = None

    def wait_for_service(self, service: str, timeout: float = 30.0, poll: float = 0.25) -> None:
        """Wait until the server answers the model's metadata (a server still starting, a model still
        loading), then build the handler.

        Raises
        ------
        ServiceUnavailableError
            No answer for the model within ``timeout`` [s] (server unreachable, unknown model).
        ServiceError
            The model's input is not ``[-1, P, H, W]``.
        """
        end = time.monotonic() + timeout
        while True:
            try:
                self._ensure()
                return
            except ServiceUnavailableError:
                if time.monotonic() + poll > end:
                    raise
                time.sleep(poll)

    def _ensure(self):
        if self._handler is not None:
            return self._handler
        from tpcflow.serve.http.client import HTTPServiceError
        from tpcflow.serve.mdp.contract import COSMIC_TAGGER
        from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler
        from tpcflow.serve.mdp.service import PooledPredictor

        try:
            meta = self.client.metadata(self.model)
        except HTTPServiceError as err:
            raise ServiceUnavailableError(f"KServe model {self.model!r} at {self.url}: {err}") from None
        shape = list(meta["inputs"][0]["shape"])
        if len(shape) != 4:
            raise ServiceError(f"KServe model {self.model!r}: input shape {shape} is not [-1, planes, H, W] "
                               "(export a cosmic tagger with tpcflow export --triton)")
        data = {"image_shape": [int(shape[2]), int(shape[3])], "downsample": 0}
        spec = dataclasses.replace(COSMIC_TAGGER, model=f"kserve {self.url}/v2/models/{self.model}")
        self._handler = CosmicTaggerHandler(PooledPredictor(_RemoteNetwork(self.client, self.model), data), spec)
        return self._handler

    def map(self, service: str, bodies: Iterable, *, max_in_flight: int = 1) -> Iterator[tuple[object, list]]:
        """Yield ``(key, reply frames)`` for each ``(key, MDP request body)``, one request at a time.

        Raises
        ------
        ServiceUnavailableError
            The server cannot be reached.
        ServiceError
            The server's error answer for a request.
        """
        from tpcflow.serve.http.client import HTTPServiceError

        try:
            yield from self._ensure().map(service, bodies, f"KServe model {self.model!r} at {self.url}")
        except HTTPServiceError as err:
            kind = ServiceUnavailableError if err.status is None else ServiceError
            raise kind(f"KServe model {self.model!r} at {self.url}: {err}") from None

    def close(self) -> None:
        self.client.close()
