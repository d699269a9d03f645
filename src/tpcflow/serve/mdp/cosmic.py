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
batch (:meth:`tpcflow.serve.mdp.service.PooledPredictor.predict_voxels`): no dense image is made.
What a worker runs (a checkpoint, a TorchScript file or a user module) is loaded by
:mod:`tpcflow.serve.mdp.service`.

Source: CosmicTagger image layout and label convention (tpcflow products docstring).
"""

from __future__ import annotations

import logging

import numpy as np

from tpcflow.errors import ProtocolError
from tpcflow.io.products import image_coordinates, image_shape
from tpcflow.serve import codec
from tpcflow.serve.mdp.contract import COSMIC_TAGGER, ServiceSpec, decode_outputs, encode_outputs

__all__ = [
    "CosmicTaggerHandler",
    "decode_reply",
    "decode_request",
    "encode_request",
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

    def map(self, service: str, bodies, where: str):
        """:meth:`tpcflow.serve.mdp.Client.map` in-process: yield ``(key, reply frames)`` per ``(key, body)``.

        One request per call, as a worker with ``--max-batch 1`` runs them.  ``where`` names the
        server in errors (the local fallback, a KServe URL).

        Raises
        ------
        ServiceError
            The handler's error for one request (what a worker's error reply would say).
        """
        from tpcflow.errors import ServiceError

        for key, body in bodies:
            (reply,) = self([[bytes(f) for f in body]])
            if isinstance(reply, BaseException):
                raise ServiceError(f"request to service {service!r} ({where}) failed: {type(reply).__name__}: {reply}")
            yield key, reply

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
