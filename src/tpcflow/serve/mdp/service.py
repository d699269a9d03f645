"""What a worker runs: a tpcflow checkpoint, a TorchScript file or a user module, as a predictor.

:func:`load_service` returns ``(predict, ServiceSpec)`` for
:class:`~tpcflow.serve.mdp.cosmic.CosmicTaggerHandler`.  A checkpoint runs through
:class:`PooledPredictor`, which feeds the network at its training resolution, and the sparse
network on its voxels (:meth:`PooledPredictor.predict_voxels`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np

from tpcflow.errors import ConfigError
from tpcflow.io.products import image_coordinates, image_shape
from tpcflow.serve.mdp.contract import COSMIC_TAGGER, ServiceSpec

__all__ = ["PooledPredictor", "file_identity", "load_service", "load_user_module", "torch_predictor"]

log = logging.getLogger(__name__)


class PooledPredictor:
    """A checkpoint's network fed images at the resolution it was trained at.

    ``predict(images [B, P, H, W])``: the images are average-pooled by ``2**k`` (window sum /
    window size, what the batch loader's ``Pooling: mean`` gives from sparse voxels), the network
    runs, and its logits [B, C, P, H >> k, W >> k] are repeated back to [B, C, P, H, W], so that every
    voxel sent gets the label of the pooled pixel it fell in, as ``tpcflow inference`` writes it.

    ``k`` comes from the checkpoint's ``data`` entry (:func:`tpcflow.models.checkpoint.input_pooling`):
    the power of two that maps the request's grid onto the training images; for another grid, the
    training ``data.downsample`` (logged once per grid).  Checkpoints without a ``data`` entry
    (written before it existed) run unpooled, with a warning at start-up.
    """

    def __init__(self, runner, data: dict | None):
        self.runner = runner
        self.device = getattr(runner, "device", None)
        self.data = data or None
        self._seen: dict[tuple, int] = {}
        if self.data is None:
            log.warning("the checkpoint stores no training resolution (data.downsample): images are fed to the "
                        "network at the resolution they are sent; retrain or re-save it to store it")

    def pooling(self, shape: tuple[int, int]) -> int:
        """The pooling power ``k`` for images of ``shape`` (H, W)."""
        from tpcflow.models.checkpoint import input_pooling

        if self.data is None:
            return 0
        if shape not in self._seen:
            k = input_pooling(self.data, shape)
            if k is None:
                k = int(self.data.get("downsample", 0))
                log.warning("requests of %dx%d pixels do not pool onto the training images %s by a power of two; "
                            "pooling them by 2**%d (the training data.downsample)", shape[0], shape[1],
                            "x".join(str(v) for v in self.data["image_shape"]), k)
            self._seen[shape] = k
        return self._seen[shape]

    @property
    def sparse(self) -> bool:
        """Whether the network is the sparse one: requests then go to :meth:`predict_voxels`, never densified."""
        return hasattr(getattr(self.runner, "model", None), "forward_sparse") and hasattr(self.runner, "forward_sparse")

    def predict_voxels(self, events: list, shape) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Labels (uint8) and scores (float32) at the voxels of each event, by the sparse network's own path.

        ``events``: per event, its planes (COO tensors of ``shape`` = larcv3 ``number_of_voxels``).
        One ``forward_sparse`` call runs the whole batch.  The voxels are pooled sparsely by the
        batch loader's own code (:func:`tpcflow.loader.voxels.fill_pooled_coo`: window sum / window
        size in float32, the grid's remainder rows and columns dropped, pixels that pool to 0
        inactive), so the worker feeds the network what ``tpcflow inference`` feeds it.  Each voxel
        gets its pooled pixel's prediction (background with probability 1 where that pixel holds no
        charge, as in the network's dense output).
        """
        import torch

        from tpcflow.loader.voxels import VoxelBatch, fill_pooled_coo
        from tpcflow.models.sparse.minibatch import SparseMinibatch, predictions_at

        n_planes = len(events[0])
        h, w = image_shape(shape)
        k = self.pooling((h, w))
        hh, ww = h >> k, w >> k
        parts = [(b, p, np.asarray(plane.index, np.int64), np.asarray(plane.values, np.float32))
                 for b, ev in enumerate(events) for p, plane in enumerate(ev)]
        vb = VoxelBatch(np.concatenate([np.full(len(i), b) for b, _, i, _ in parts]),
                        np.concatenate([np.full(len(i), p) for _, p, i, _ in parts]),
                        np.concatenate([i for *_, i, _ in parts]), np.concatenate([v for *_, v in parts]),
                        tuple(int(n) for n in shape))
        rows = np.zeros((len(vb.index), 5), np.float32)
        n = fill_pooled_coo(rows, vb, n_channels=n_planes, max_voxels=hh * ww, downsample=k, transpose=True)
        batch = SparseMinibatch.from_coo(rows[:n], None, len(events), n_planes, (hh, ww))
        logits = self.runner.forward_sparse(batch.planes(), len(events), (hh, ww))
        out: list[list] = [[] for _ in events]
        for p, (lg, coords) in enumerate(zip(logits, batch.coords, strict=True)):
            score, label = torch.softmax(lg, dim=1).max(dim=1)
            score, label = score.cpu().numpy(), label.cpu().numpy()
            c = coords.numpy()
            key = (c[:, 0] * hh + c[:, 1]) * ww + c[:, 2]
            for b, ev in enumerate(events):
                y, x = image_coordinates(ev[p].index, shape)
                want = (b * hh + np.minimum(y >> k, hh - 1)) * ww + np.minimum(x >> k, ww - 1)
                lab, sc = predictions_at(key, label, score, want)
                out[b].append((lab.astype(np.uint8), sc.astype(np.float32)))
        return out

    def __call__(self, images):
        import torch

        b, p, h, w = images.shape
        k = self.pooling((h, w))
        if k == 0:
            return self.runner(images)
        f = 1 << k
        x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        pooled = torch.nn.functional.avg_pool2d(x.reshape(b * p, 1, h, w), f).reshape(b, p, h // f, w // f)
        out = self.runner(pooled)
        _, hh, ww = out.shape[-3:]
        rows = torch.clamp(torch.arange(h, device=out.device) >> k, max=hh - 1)
        cols = torch.clamp(torch.arange(w, device=out.device) >> k, max=ww - 1)
        return out[..., rows[:, None], cols[None, :]]


def torch_predictor(model, *, device: str | None = None, precision: str | None = None):
    """Wrap a torch module as ``predict(images ndarray) -> output`` on ``device`` with autocast.

    A :class:`~tpcflow.models.runtime.TorchRunner`: ``device`` as
    :func:`~tpcflow.models.runtime.pick_device`, ``precision`` in the one vocabulary
    (``float32``, ``bfloat16``, ``mixed``, or ``fp32`` / ``bf16`` / ``fp16``).
    """
    from tpcflow.models.runtime import TorchRunner

    return TorchRunner(model, device=device, precision=precision)


def load_user_module(path, *, device: str | None = None, precision: str | None = None):
    """Import ``path`` (a user's Python file): its ``process_net``, its ``SERVICE`` spec, its ``setup``.

    ``setup(device, precision)``, when defined, is called once with the worker's ``--device`` and
    ``--precision`` (canonical names, :mod:`tpcflow.models.runtime`).  Without it, a non-default
    device or precision cannot reach the network: a warning says so.

    Returns
    -------
    (process_net, ServiceSpec)

    Raises
    ------
    ConfigError
        If the file does not exist, defines no callable ``process_net``, or a malformed ``SERVICE``.
    """
    import warnings

    from tpcflow.config.schema import PRECISION_ALIASES

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--module: {str(path)!r} does not exist")
    name = f"tpcflow_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    fn = getattr(mod, "process_net", None)
    if not callable(fn):
        raise ConfigError(f"--module: {str(path)!r} must define process_net(images) -> outputs")
    service = ServiceSpec.from_declaration(mod.SERVICE) if hasattr(mod, "SERVICE") else COSMIC_TAGGER
    precision = PRECISION_ALIASES.get(precision, precision) or "float32"
    if callable(getattr(mod, "setup", None)):
        mod.setup(device=device or "auto", precision=precision)
    elif device not in (None, "auto") or precision != "float32":
        warnings.warn(f"--module {path.name} defines no setup(device, precision): device={device!r} and "
                      f"precision={precision!r} are not applied to its network", UserWarning, stacklevel=2)
    return fn, service


def load_service(*, model_path=None, module_path=None, device=None, precision=None):
    """``(predict, ServiceSpec)`` of a tpcflow checkpoint / TorchScript file or a user module.

    Raises
    ------
    ConfigError
        Neither or both given; a missing file; a module without ``process_net``.
    """
    if (model_path is None) == (module_path is None):
        raise ConfigError("give exactly one of --model CHECKPOINT or --module user.py")
    if module_path is not None:
        predict, spec = load_user_module(module_path, device=device, precision=precision)
        return predict, dataclasses.replace(spec, model=file_identity(module_path))
    if not Path(model_path).is_file():
        raise ConfigError(f"--model: {str(model_path)!r} does not exist")
    from tpcflow.models.checkpoint import load_model

    data: dict = {}
    model, config = load_model(model_path, map_location="cpu", data=data)
    runner = torch_predictor(model, device=device, precision=precision)
    spec = dataclasses.replace(COSMIC_TAGGER, model=file_identity(model_path))
    if config is None:  # TorchScript: no stored resolution, run as sent
        return runner, spec
    return PooledPredictor(runner, data), spec


def file_identity(path) -> str:
    """``sha256:<16 hex>`` of a file's bytes: the identity of the network a worker serves."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"
