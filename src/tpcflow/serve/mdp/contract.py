"""The service contract: what a served network takes and returns, declared once, checked on every reply.

A worker module (``tpcflow worker --module net.py``) may declare::

    SERVICE = {"inputs": {"products": ["wire"], "planes": 3, "form": "dense"},
               "outputs": [{"name": "shower", "kind": "probabilities"},
                           {"name": "track", "kind": "probabilities"},
                           {"name": "cluster", "kind": "label", "classes": 300}]}

    def setup(device, precision):        # optional: --device / --precision reach the module here
        ...

    def process_net(images):             # images: float32 [B, P, H, W], CosmicTagger layout, 0 = no charge
        return {"shower": ..., "track": ..., "cluster": ...}   # each [B, P, H, W] (or [B, C, P, H, W])

Inputs (all optional): ``products``, the product names a client should send (``tpcflow submit
--producer``; informational); ``planes``, the number of planes per request (a request with
another count gets an error reply); ``form``, what ``process_net`` receives:

* ``dense`` (default): ``images`` float32 ``[B, P, H, W]`` in the CosmicTagger layout, 0 where
  no charge was sent; outputs ``[B, P, H, W]`` or ``[B, C, P, H, W]``, gathered at the voxels;
* ``sparse``: a list of B events, each a list of P planes ``(coords, values)``: ``coords`` int64
  ``[N, 2]`` = (h, w) in the same layout, ``values`` float32 ``[N]``; outputs are
  ``{name: [per event [per plane [N] or [N, C]]]}``, in the order of the voxels sent.

Output kinds (every output is gathered at the request's voxels only, in their order):

==============  ===========================================  =================================
kind            values                                       on the wire (per plane)
==============  ===========================================  =================================
label           integers in ``[0, classes)``                 uint8 / uint16 / int32 by classes
probabilities   floats, sent unchanged (no softmax)          float32
logits          floats, sent unchanged                       float32
regression      floats (an image: charge, flow, ...)         float32
==============  ===========================================  =================================

An output ``[B, C, P, H, W]`` gives ``[N, C]`` per plane.  A label out of range, a non-integer
label, or a NaN/inf value is an error naming the output, the plane and the count; never a wrap or
a silently wrong number.  Pixels without charge are not sent and get no value.

A module without ``SERVICE`` and every checkpoint are the CosmicTagger service
(:data:`COSMIC_TAGGER`): the network returns logits (or labels) and the reply is the argmax
``label`` (3 classes) and its softmax probability ``score``, as before.

Reply body: one tensor per plane and output, named ``<output><plane>`` (``label0``, ``score0``,
``label1``, ...), planes in order, outputs in declared order, each with the event id; the first
carries ``attrs["model"]``, the identity of the network (:attr:`ServiceSpec.model`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tpcflow.errors import ConfigError, ProtocolError
from tpcflow.serve import codec

__all__ = ["COSMIC_TAGGER", "FORMS", "KINDS", "Output", "ServiceSpec", "decode_outputs", "encode_outputs",
           "label_dtype"]

KINDS = ("label", "probabilities", "logits", "regression")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*[A-Za-z_]$|^[A-Za-z_]$")


def label_dtype(classes: int) -> np.dtype:
    """The smallest integer dtype for labels ``[0, classes)``: uint8, uint16 or int32."""
    if classes <= 256:
        return np.dtype(np.uint8)
    if classes <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


@dataclass(frozen=True)
class Output:
    """One declared output: ``name`` (letters, digits, ``_``; not ending in a digit), ``kind``, ``classes``."""

    name: str
    kind: str
    classes: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"SERVICE output name {self.name!r}: letters, digits and '_', not ending in a digit")
        if self.kind not in KINDS:
            raise ConfigError(f"SERVICE output {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "label" and not (isinstance(self.classes, int) and self.classes >= 1):
            raise ConfigError(f"SERVICE output {self.name!r}: a label output needs 'classes' (an int >= 1)")

    def check(self, values: np.ndarray, plane: int) -> np.ndarray:
        """Return ``values`` in the wire dtype of this output.

        Raises
        ------
        ValueError
            Labels out of ``[0, classes)`` or not integers; NaN or inf floats (with the count).
        """
        values = np.asarray(values)
        where = f"output {self.name!r}, plane {plane}"
        if self.kind == "label":
            if values.dtype.kind == "f":
                bad = int(np.count_nonzero(values != np.round(values)) + np.count_nonzero(~np.isfinite(values)))
                if bad:
                    raise ValueError(f"{where}: {bad} label values are not integers")
            elif values.dtype.kind not in "iub":
                raise ValueError(f"{where}: labels of dtype {values.dtype} are not integers")
            out = int(np.count_nonzero((values < 0) | (values >= self.classes)))
            if out:
                raise ValueError(f"{where}: {out} labels outside [0, {self.classes}) "
                                 f"(min {values.min()}, max {values.max()}); declare more classes")
            return values.astype(label_dtype(self.classes))
        values = values.astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ValueError(f"{where}: {bad} of {values.size} values are NaN or inf")
        return values


FORMS = ("dense", "sparse")


@dataclass(frozen=True)
class ServiceSpec:
    """The inputs (products, planes, form) and the outputs of a service, in reply order.

    ``model`` names the network behind it (``sha256:<16 hex>`` of the checkpoint or module file);
    every reply carries it, so that a client can tell two networks apart under one service name.
    It is not part of the contract's equality.
    """

    outputs: tuple[Output, ...]
    products: tuple[str, ...] = ()
    planes: int | None = None
    form: str = "dense"
    model: str = field(default="", compare=False)

    def __post_init__(self):
        names = [o.name for o in self.outputs]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"SERVICE outputs must be one or more distinct names, got {names}")
        if self.form not in FORMS:
            raise ConfigError(f"SERVICE inputs: form {self.form!r} is not one of {', '.join(FORMS)}")
        if self.planes is not None and not (isinstance(self.planes, int) and self.planes >= 1):
            raise ConfigError(f"SERVICE inputs: planes {self.planes!r} must be an int >= 1")

    def check_planes(self, n: int) -> None:
        """Raise ProtocolError if a request with ``n`` planes does not fit the declared inputs."""
        if self.planes is not None and n != self.planes:
            raise ProtocolError(f"request has {n} planes; this service takes {self.planes}"
                                + (f" (products {list(self.products)})" if self.products else ""))

    @classmethod
    def from_declaration(cls, decl: Any) -> ServiceSpec:
        """From a module's ``SERVICE``: a ServiceSpec, or ``{"outputs": [{"name", "kind", "classes"?}, ...]}``.

        Raises
        ------
        ConfigError
            If the declaration is malformed (naming the field).
        """
        if isinstance(decl, ServiceSpec):
            return decl
        if not isinstance(decl, dict) or not isinstance(decl.get("outputs"), (list, tuple)) \
                or set(decl) - {"inputs", "outputs"}:
            raise ConfigError("SERVICE must be a dict {'inputs': {...}, 'outputs': [{'name': ..., 'kind': ...}, ...]}")
        outs = []
        for o in decl["outputs"]:
            if not isinstance(o, dict) or set(o) - {"name", "kind", "classes"}:
                raise ConfigError(f"SERVICE output {o!r}: keys are name, kind and classes")
            outs.append(Output(o.get("name"), o.get("kind"), o.get("classes")))
        inputs = decl.get("inputs", {})
        if not isinstance(inputs, dict) or set(inputs) - {"products", "planes", "form"}:
            raise ConfigError(f"SERVICE inputs {inputs!r}: keys are products, planes and form")
        products = inputs.get("products", ())
        if isinstance(products, str) or not all(isinstance(p, str) for p in products):
            raise ConfigError(f"SERVICE inputs: products {products!r} must be a list of names")
        return cls(tuple(outs), tuple(products), inputs.get("planes"), inputs.get("form", "dense"))


#: the CosmicTagger service: argmax label of 3 classes and its softmax probability
COSMIC_TAGGER = ServiceSpec((Output("label", "label", classes=3), Output("score", "probabilities")))


def encode_outputs(event_id, values: dict[str, list[np.ndarray]], spec: ServiceSpec) -> list:
    """Encode ``{output: [per-plane values]}`` as a reply body (checked, in the wire dtypes).

    Raises
    ------
    ValueError
        From :meth:`Output.check`; a missing output.
    """
    missing = [o.name for o in spec.outputs if o.name not in values]
    if missing:
        raise ValueError(f"network returned no {missing} (declared outputs: {[o.name for o in spec.outputs]})")
    n_planes = len(values[spec.outputs[0].name])
    frames = []
    for p in range(n_planes):
        for o in spec.outputs:
            attrs = {"model": spec.model} if spec.model and not frames else None  # once per reply
            frames += codec.encode(o.check(values[o.name][p], p), name=f"{o.name}{p}", event_id=event_id,
                                   attrs=attrs)
    return frames


def decode_outputs(frames, *, with_model: bool = False):
    """Return ``(event_id, {output: [per-plane arrays]})`` from a reply body.

    With ``with_model``, ``(event_id, outputs, model)``: the ``model`` the worker declared
    (:attr:`ServiceSpec.model`), ``""`` when it declared none.

    Raises
    ------
    ProtocolError
        If a tensor name is not ``<output><plane>`` or the planes of an output are not 0..P-1.
    """
    tensors = codec.decode_all(frames)
    if not tensors:
        raise ProtocolError("service reply: no tensor in the body")
    out: dict[str, list] = {}
    for t in tensors:
        m = re.match(r"^(.*?)(\d+)$", t.name or "")
        if not m:
            raise ProtocolError(f"service reply: tensor name {t.name!r} is not <output><plane>")
        planes = out.setdefault(m.group(1), [])
        if int(m.group(2)) != len(planes):
            raise ProtocolError(f"service reply: tensor {t.name!r} out of plane order")
        planes.append(t.data)
    counts = {name: len(p) for name, p in out.items()}
    if len(set(counts.values())) != 1:
        raise ProtocolError(f"service reply: outputs have different plane counts {counts}")
    if with_model:
        return tensors[0].event_id, out, str(tensors[0].attrs.get("model", ""))
    return tensors[0].event_id, out
