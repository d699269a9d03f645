"""Cosmic-tagger payload convention and the worker-side model runner.

Request body (tensor codec, :mod:`tpcflow.serve.codec`): one COO tensor per plane, named
``plane<k>``, dtype float32 (charge [ADC]), shape = larcv3 ``meta.number_of_voxels`` (SBND:
(2048, 1280)), flat larcv3 voxel index, the event id in every header and the plane's ImageMeta in
``attrs["meta"]``. Compressed with lz4 by default.

Reply body: per plane, a dense uint8 tensor ``label<k>`` (0 background, 1 cosmic, 2 neutrino)
and a dense float32 tensor ``score<k>`` (softmax probability of that label), both of length
N = the plane's voxel count, in the request's voxel order, plus the event id.

The worker scatters each event into CosmicTagger's image layout [3, H, W] with
``image[p, h, w] = dense_p[w, h]`` (H = number_of_voxels[1], W = number_of_voxels[0]), runs the
network on a batch, and gathers its prediction at the input voxels only.  A checkpoint of the
sparse network takes the voxels instead, pooled sparsely, in one ``forward_sparse`` call per
batch (:meth:`PooledPredictor.predict_voxels`): no dense image is made.

Source: CosmicTagger image layout and label convention (tpcflow products docstring).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np

from tpcflow.errors import ConfigError, ProtocolError
from tpcflow.io.products import image_coordinates, image_shape
from tpcflow.serve import codec
from tpcflow.serve.mdp.contract import COSMIC_TAGGER, ServiceSpec, decode_outputs, encode_outputs

__all__ = [
    "CosmicTaggerHandler",
    "PooledPredictor",
    "decode_reply",
    "decode_request",
    "encode_request",
    "load_service",
]

log = logging.getLogger(__name__)


def encode_request(event_id, projections, *, compression: str | None = "lz4") -> list:
    """Encode the planes of one event (list of :class:`~tpcflow.io.SparseProjection`) as a request."""
    eid = None if event_id is None else tuple(int(x) for x in (event_id.as_tuple() if hasattr(event_id, "as_tuple") else event_id))
    frames = []
    for k, proj in enumerate(projections):
        frames += codec.encode_coo(
            np.asarray(proj.index), np.asarray(proj.values, dtype=np.float32), tuple(proj.meta.number_of_voxels),
            name=f"plane{k}", compression=compression, event_id=eid, attrs={"meta": proj.meta.to_dict()},
        )
    return frames


def decode_request(frames) -> tuple[tuple | None, list]:
    """Return ``(event_id, planes)``: ``planes`` are COO :class:`~tpcflow.serve.codec.Decoded` tensors.

    Raises
    ------
    ProtocolError
        If the body is not 1+ two-dimensional COO planes.
    """
    planes = codec.decode_all(frames)
    if not planes:
        raise ProtocolError("cosmic-tagger request: no plane tensor in the body")
    for k, t in enumerate(planes):
        if t.encoding != "coo" or len(t.shape) != 2:
            raise ProtocolError(f"cosmic-tagger request: plane {k} must be a 2-D COO tensor, got {t.encoding} {t.shape}")
        if t.shape != planes[0].shape:
            raise ProtocolError(f"cosmic-tagger request: plane {k} has shape {t.shape}, plane 0 has {planes[0].shape}")
    return planes[0].event_id, planes


def decode_reply(frames) -> tuple[tuple | None, list, list]:
    """Return ``(event_id, labels, scores)`` lists of per-plane arrays from a CosmicTagger reply body.

    Raises
    ------
    ProtocolError
        If the body is not a CosmicTagger reply (label and score per plane).
    """
    eid, outs = decode_outputs(frames)
    if set(outs) != {"label", "score"}:
        raise ProtocolError(f"cosmic-tagger reply: expected label/score per plane, got outputs {sorted(outs)}")
    return eid, outs["label"], outs["score"]


def _scatter(batch_planes: list, shape) -> np.ndarray:
    """Dense CosmicTagger images [B, P, H, W] float32 from COO planes of shape (W, H)."""
    h_n, w_n = image_shape(shape)
    nplanes = len(batch_planes[0])
    images = np.zeros((len(batch_planes), nplanes, h_n, w_n), dtype=np.float32)
    for b, planes in enumerate(batch_planes):
        for p, t in enumerate(planes):
            h, w = image_coordinates(t.index, shape)
            images[b, p, h, w] = t.values
    return images


def _interpret(out, nplanes: int):
    """Return ("labels", [B,P,H,W]) or ("logits", [B,C,P,H,W]) from a network's output."""
    if isinstance(out, dict):
        raise RuntimeError(f"process_net returned a dict ({sorted(out)}): declare its outputs in SERVICE "
                           "(see tpcflow.serve.mdp.contract); without SERVICE it must return logits or labels")
    if not isinstance(out, (list, tuple)) and not hasattr(out, "shape"):
        raise RuntimeError(f"process_net returned {type(out).__name__}: expected logits [B,C,P,H,W], a tuple of "
                           "P [B,C,H,W] tensors, or labels [B,P,H,W]")
    if isinstance(out, (list, tuple)):
        if len(out) != nplanes:
            raise RuntimeError(f"network returned {len(out)} outputs for {nplanes} planes")
        stack = __import__("torch").stack if hasattr(out[0], "detach") else np.stack
        out = stack(list(out), 2)  # P x [B, C, H, W] -> [B, C, P, H, W]
    ndim = out.ndim if hasattr(out, "ndim") else len(out.shape)
    if ndim == 5:
        return "logits", out
    is_float = out.is_floating_point() if hasattr(out, "detach") else np.issubdtype(out.dtype, np.floating)
    if ndim == 4 and not is_float:
        return "labels", out
    raise RuntimeError(
        f"network output of shape {tuple(out.shape)} is neither logits [B,C,P,H,W], a tuple of P "
        "[B,C,H,W] tensors, nor integer labels [B,P,H,W]"
    )


def _gather(kind: str, out, b: int, p: int, h, w):
    if hasattr(out, "detach"):  # torch: gather on the device, move only N values
        import torch

        hh = torch.as_tensor(h, device=out.device)
        ww = torch.as_tensor(w, device=out.device)
        if kind == "labels":
            lab = out[b, p][hh, ww].to("cpu").numpy()
            return lab, np.ones(lab.shape, np.float32)
        prob = torch.softmax(out[b, :, p][:, hh, ww].float(), dim=0)
        score, lab = prob.max(dim=0)
        return lab.to("cpu").numpy(), score.to("cpu").numpy().astype(np.float32)
    out = np.asarray(out)
    if kind == "labels":
        lab = out[b, p][h, w]
        return lab, np.ones(lab.shape, np.float32)
    logits = out[b, :, p][:, h, w].astype(np.float64)
    logits -= logits.max(axis=0, keepdims=True) if logits.size else 0
    prob = np.exp(logits)
    prob /= prob.sum(axis=0, keepdims=True)
    return prob.argmax(axis=0), prob.max(axis=0).astype(np.float32) if prob.size else np.zeros(0, np.float32)


class CosmicTaggerHandler:
    """Batch handler for :class:`~tpcflow.serve.mdp.worker.Worker`: decode, batch, predict, encode.

    Parameters
    ----------
    predict : callable
        ``predict(images [B, P, H, W] float32 ndarray) -> output``.  With the default ``spec``
        (:data:`~tpcflow.serve.mdp.contract.COSMIC_TAGGER`): logits [B,C,P,H,W], a tuple of P
        logit tensors [B,C,H,W], or integer labels [B,P,H,W]; numpy or torch.  With a declared
        spec: ``{output: [B, P, H, W] or [B, C, P, H, W]}`` (one output may be returned bare).
    spec : ServiceSpec
        The service contract, inputs and outputs (:mod:`tpcflow.serve.mdp.contract`); the
        default is the CosmicTagger service, the one a checkpoint serves.
    """

    def __init__(self, predict, spec: ServiceSpec = COSMIC_TAGGER):
        self.predict = predict
        self.spec = spec

    def __call__(self, bodies: list) -> list:
        replies: list = [None] * len(bodies)
        groups: dict = {}
        for i, body in enumerate(bodies):
            try:
                eid, planes = decode_request(body)
                self.spec.check_planes(len(planes))
            except ProtocolError as err:
                replies[i] = err
                continue
            groups.setdefault((len(planes), planes[0].shape), []).append((i, eid, planes))
        if self.spec.form == "sparse":
            self._sparse(groups, replies)
            return replies
        for (nplanes, shape), items in groups.items():
            if self.spec == COSMIC_TAGGER and getattr(self.predict, "sparse", False):
                self._voxels(items, shape, replies)
                continue
            images = _scatter([planes for _, _, planes in items], shape)
            result = self.predict(images)
            cosmic = self.spec == COSMIC_TAGGER
            kind, out = _interpret(result, nplanes) if cosmic else ("outputs", _outputs(result, self.spec))
            for b, (i, eid, planes) in enumerate(items):
                values: dict[str, list] = {o.name: [] for o in self.spec.outputs}
                for p, t in enumerate(planes):
                    h, w = image_coordinates(t.index, shape)
                    if cosmic:
                        lab, sc = _gather(kind, out, b, p, h, w)
                        values["label"].append(lab)
                        values["score"].append(sc)
                    else:
                        for name, arr in out.items():
                            values[name].append(arr[b, p][h, w] if arr.ndim == 4 else arr[b, :, p][:, h, w].T)
                try:
                    replies[i] = encode_outputs(eid, values, self.spec)
                except ValueError as err:  # this request's reply breaks the contract: its own error reply
                    replies[i] = err
        return replies

    def _voxels(self, items: list, shape, replies: list) -> None:
        """A sparse checkpoint: the batch's voxels straight into ``forward_sparse``, never a dense image."""
        per_event = self.predict.predict_voxels([planes for _, _, planes in items], shape)
        for (i, eid, _planes), planes_out in zip(items, per_event, strict=True):
            values = {"label": [lab for lab, _ in planes_out], "score": [sc for _, sc in planes_out]}
            try:
                replies[i] = encode_outputs(eid, values, self.spec)
            except ValueError as err:
                replies[i] = err

    def _sparse(self, groups: dict, replies: list) -> None:
        """``form: sparse``: process_net takes per-event, per-plane (coords, values) and answers per voxel."""
        items = [item for group in groups.values() for item in group]
        if not items:
            return
        events = []
        for _, _, planes in items:
            per_plane = []
            for t in planes:
                h, w = image_coordinates(t.index, t.shape)
                per_plane.append((np.stack([h, w], axis=1), np.asarray(t.values, np.float32)))
            events.append(per_plane)
        result = self.predict(events)
        if not isinstance(result, dict):
            if len(self.spec.outputs) != 1:
                raise RuntimeError(f"process_net returned {type(result).__name__}; declared outputs "
                                   f"{[o.name for o in self.spec.outputs]} need a dict")
            result = {self.spec.outputs[0].name: result}
        for b, (i, eid, planes) in enumerate(items):
            try:
                values = {}
                for o in self.spec.outputs:
                    per_plane = [_to_numpy(v) for v in result[o.name][b]]
                    if [len(v) for v in per_plane] != [len(t.index) for t in planes]:
                        raise ValueError(f"output {o.name!r}: {[len(v) for v in per_plane]} values for "
                                         f"{[len(t.index) for t in planes]} voxels")
                    values[o.name] = per_plane
                replies[i] = encode_outputs(eid, values, self.spec)
            except (KeyError, IndexError, ValueError) as err:
                replies[i] = ValueError(f"process_net (sparse) reply for this event: {type(err).__name__}: {err}")


def _to_numpy(a) -> np.ndarray:
    return a.detach().to("cpu").numpy() if hasattr(a, "detach") else np.asarray(a)


def _outputs(result, spec: ServiceSpec) -> dict[str, np.ndarray]:
    """The declared outputs of ``process_net``'s result as numpy arrays [B, P, H, W] or [B, C, P, H, W]."""
    if not isinstance(result, dict):
        if len(spec.outputs) != 1:
            raise RuntimeError(f"process_net returned {type(result).__name__}; declared outputs "
                               f"{[o.name for o in spec.outputs]} need a dict")
        result = {spec.outputs[0].name: result}
    out = {}
    for o in spec.outputs:
        if o.name not in result:
            raise RuntimeError(f"process_net returned no output {o.name!r} (it returned {sorted(result)})")
        arr = _to_numpy(result[o.name])
        if arr.ndim not in (4, 5):
            raise RuntimeError(f"output {o.name!r} has shape {arr.shape}, expected [B, P, H, W] or [B, C, P, H, W]")
        out[o.name] = arr
    return out


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
        One ``forward_sparse`` call runs the whole batch.  The voxels are pooled sparsely as
        :meth:`__call__` pools the dense images (window sum / window size, the same float32 sums;
        the grid's remainder rows and columns dropped; pixels that pool to 0 inactive), and each voxel gets its pooled
        pixel's prediction (background with probability 1 where that pixel holds no charge, as in
        the network's dense output).
        """
        import torch

        from tpcflow.models.sparse.minibatch import predictions_at

        n_planes = len(events[0])
        h, w = image_shape(shape)
        k = self.pooling((h, w))
        f = 1 << k
        hh, ww = h // f, w // f
        planes, keys_in = [], []
        for p in range(n_planes):
            keys, fine, values = [], [], []
            per_event = []
            for b, ev in enumerate(events):
                y, x = image_coordinates(ev[p].index, shape)
                inside = (y < hh * f) & (x < ww * f)
                keys.append((b * hh + (y[inside] >> k)) * ww + (x[inside] >> k))
                fine.append(y[inside] * w + x[inside])
                values.append(np.asarray(ev[p].values, np.float32)[inside])
                per_event.append((b * hh + np.minimum(y >> k, hh - 1)) * ww + np.minimum(x >> k, ww - 1))
            all_keys, all_fine = np.concatenate(keys), np.concatenate(fine)
            # window sums in float32, each window's pixels in row-major order: avg_pool2d's own sums, bit for bit
            order = np.lexsort((all_fine, all_keys))
            sorted_keys = all_keys[order]
            first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(order) else np.zeros(0, bool)
            key = sorted_keys[first]
            window = torch.from_numpy(np.cumsum(first) - 1)
            sums = torch.zeros(len(key), dtype=torch.float32).index_add_(
                0, window, torch.from_numpy(np.concatenate(values)[order]))
            charge = (sums / (f * f)).numpy()
            active = charge != 0
            key, charge = key[active], charge[active]
            b_idx, rest = np.divmod(key, hh * ww)
            coords = np.stack([b_idx, *np.divmod(rest, ww)], axis=1)
            planes.append((torch.from_numpy(coords), torch.from_numpy(charge[:, None])))
            keys_in.append((key, per_event))
        logits = self.runner.forward_sparse(planes, len(events), (hh, ww))
        out: list[list] = [[] for _ in events]
        for p, lg in enumerate(logits):
            score, label = torch.softmax(lg, dim=1).max(dim=1)
            score, label = score.cpu().numpy(), label.cpu().numpy()
            key, per_event = keys_in[p]
            for b, want in enumerate(per_event):
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
