"""The preprocessing of a model trained on ROOT TTrees: from branch values to the network's input rows.

One home for what :class:`~tpcflow.loader.root_generator.DataGenerator` does to events
before training, so that serving (``tpcflow serve-http``) and ``tpcflow root-predict`` do
exactly the same to raw events.  It travels with the model in its ``params.json``
(``preprocessing``, layout below) and is applied by the server to raw rows.

Row layout (:meth:`tpcflow.io.root.Specs.layout`): flat branches first, then each jagged
branch padded (or truncated) to its ``jdim``.  Normalisation is min/max from the specs,
``(x - min) / (max - min)`` (``x - min`` when ``max == min``), as MLaaS4HEP
(arXiv:1811.04492).  Padded slots and non-finite values have ``mask == False`` and hold
``pad_value`` after normalisation.  With ``use_mask`` the network's input is ``[x, mask]``
(``2 W`` columns).

JSON layout (``format = "tpcflow-root-preprocessing"``, ``version = 1``)::

    {"format": ..., "version": 1, "normalise": true, "pad_value": 0.0, "use_mask": false,
     "identifiers": ["run", "luminosityBlock", "event"],
     "specs": {<tpcflow-root-specs, see tpcflow.io.root.specs>}}

Output transforms (:func:`output_transform`): ``sigmoid`` (one logit per event),
``softmax`` (K logits), ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.io.root.specs import BranchSpec, Specs

__all__ = [
    "DEFAULT_IDENTIFIERS",
    "load_preprocessing",
    "PREPROCESSING_FORMAT",
    "OUTPUT_TRANSFORMS",
    "Preprocessing",
    "cap_jdim",
    "output_transform",
]

PREPROCESSING_FORMAT = "tpcflow-root-preprocessing"
_VERSION = 1
OUTPUT_TRANSFORMS = ("sigmoid", "softmax", "none")

#: event identifier branches: kept as keys of the outputs, never features (a model could tell two
#: samples apart by their run or luminosity block alone).  CMS NanoAOD, ATLAS ntuples, LHCb
#: tuples, and ROOT tutorials (``Run``/``Event``); ``mcChannelNumber`` names an ATLAS sample.
DEFAULT_IDENTIFIERS = ("run", "luminosityBlock", "event", "RunNumber", "EventNumber", "lbn", "LumiBlock",
                       "mcChannelNumber", "runNumber", "eventNumber", "Run", "Event")


def cap_jdim(specs: Specs, caps: int | dict[str, int] | None) -> Specs:
    """Specs whose jagged branches are at most ``caps`` wide (one value for all, or per branch).

    Events with more values keep their first ``jdim``; :meth:`Preprocessing.rows` counts them.

    Raises
    ------
    ConfigError
        If a cap is negative, or names a branch that is not a jagged branch of the specs.
    """
    if caps is None:
        return specs
    if isinstance(caps, dict):
        unknown = sorted(set(caps) - set(specs.jagged))
        if unknown:
            raise ConfigError(f"jdim caps name {unknown}, which are not jagged branches; jagged: {specs.jagged[:10]}")
        per = caps
    else:
        per = dict.fromkeys(specs.jagged, caps)
    if any(not isinstance(c, int) or c < 0 for c in per.values()):
        raise ConfigError(f"jdim caps must be integers >= 0, but got {caps}")
    branches = {}
    for name, s in specs.branches.items():
        cap = per.get(name)
        branches[name] = s if cap is None or s.jdim <= cap else BranchSpec(**{**s.__dict__, "jdim": cap})
    return Specs(tree=specs.tree, files=list(specs.files), nevents=specs.nevents, branches=branches,
                 skipped=dict(specs.skipped))


def _scatter_plan(offsets: np.ndarray, jdim: int, width: int):
    """Flat destinations in an (N, width) row-major matrix of a jagged branch padded to ``jdim``.

    Returns ``(dest, keep, clipped)``: value ``k`` kept by ``keep`` (None: all kept) goes to
    ``dest[k] + first column``; ``clipped`` counts the events with more than ``jdim`` values.
    One vectorised pass over the values; no per-event loop.
    """
    counts = np.diff(offsets)
    n, total = len(counts), int(offsets[-1] - offsets[0])
    rows = np.repeat(np.arange(n, dtype=np.int64), counts)
    local = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1] - offsets[0], counts)
    keep, clipped = None, 0
    if counts.max(initial=0) > jdim:
        keep = local < jdim
        rows, local = rows[keep], local[keep]
        clipped = int(np.count_nonzero(counts > jdim))
    return rows * width + local, keep, clipped


@dataclass
class Preprocessing:
    """What turns one tree's branches into network input rows (see the module docstring).

    Attributes
    ----------
    specs : Specs
        Branches, their kinds, widths (``jdim``, after caps) and ranges.
    normalise : bool
        Min/max normalise with the specs' ranges.
    pad_value : float
        Value of padded slots and non-finite values, after normalisation.
    use_mask : bool
        Append the mask to the row (the input is then ``2 W`` wide).
    identifiers : list of str
        Identifier branches (not features) that label each output row.
    truncated : dict of str to int
        Events whose jagged branch held more values than its ``jdim`` (counted by :meth:`rows`).
    """

    specs: Specs
    normalise: bool = True
    pad_value: float = 0.0
    use_mask: bool = False
    identifiers: list[str] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        lo, scale = np.zeros(self.specs.width), np.ones(self.specs.width)
        for name, col, w in self.specs.layout():
            s = self.specs.branches[name]
            if s.min is not None:
                lo[col:col + w] = s.min
                scale[col:col + w] = 1.0 / (s.max - s.min) if s.max > s.min else 1.0
        self._lo, self._scale = lo.astype(np.float32), scale.astype(np.float32)

    @property
    def width(self) -> int:
        """Columns of a row of branch values (``specs.width``)."""
        return self.specs.width

    @property
    def input_width(self) -> int:
        """Columns of the network's input: ``width``, or ``2 width`` with ``use_mask``."""
        return self.width * (2 if self.use_mask else 1)

    @property
    def columns(self) -> list[str]:
        """Names of the row's columns (``branch`` or ``branch[i]``): the ``keys`` of raw rows."""
        return self.specs.columns()

    @property
    def branches(self) -> list[str]:
        """Feature branches, in row order."""
        return [name for name, _, _ in self.specs.layout()]

    def check_chunk(self, chunk_size: int, max_bytes: int, what: str = "chunk_size") -> None:
        """Refuse a chunk of ``chunk_size`` events whose rows would take more than ``max_bytes``.

        A chunk holds raw rows (float32), normalised rows (float32) and a mask (bool):
        ``9 * width`` bytes per event.  A full NanoAOD with PF candidates is 57,455 columns wide,
        2.3 GB per 10,000 events without a ``jdim`` cap.

        Raises
        ------
        ConfigError
            Naming the size, the limit, the widest branches and the largest chunk that fits.
        """
        need = 9 * self.width * chunk_size
        if need <= max_bytes:
            return
        fits = max(1, max_bytes // (9 * max(self.width, 1)))
        widest = sorted(((s.width, n) for n, s in self.specs.branches.items()), reverse=True)[:3]
        raise ConfigError(
            f"{what}={chunk_size} events of {self.width} columns take {need / 1e9:.2f} GB, above the limit of "
            f"{max_bytes / 1e9:.2f} GB: lower {what} to {fits} or less, or cap the jagged widths with jdim "
            f"(widest: {', '.join(f'{n} {w}' for w, n in widest)})")

    def raw_rows(self, arrays: dict, *, count: bool = True) -> np.ndarray:
        """Branch values of ``N`` events as ``(N, width)`` float32 rows, NaN where a jagged slot is empty.

        ``arrays`` maps every feature branch to its awkward (or numpy) array of ``N`` events.
        Events with more values than a branch's ``jdim`` keep their first ``jdim``;
        they are counted in :attr:`truncated` (unless ``count`` is False: a second read of them).

        Raises
        ------
        DataFormatError
            If a branch is missing from ``arrays``.
        """
        from tpcflow.io.root.reader import flat_numpy, jagged_parts

        missing = [b for b in self.branches if b not in arrays]
        if missing:
            raise DataFormatError(f"{len(missing)} branch(es) of the model are missing, e.g. {missing[:3]}")
        n = len(arrays[self.branches[0]]) if self.branches else 0
        width = self.width
        x = np.full((n, width), np.nan, dtype=np.float32)
        xf = x.reshape(-1)
        plans: dict = {}  # NanoAOD branches sharing a counter (nJet) share offsets: one plan per counter
        for name, col, w in self.specs.layout():
            s = self.specs.branches[name]
            if s.kind == "flat":
                x[:, col:col + w] = flat_numpy(arrays[name]).reshape(n, w)
            elif w:
                offsets, content = jagged_parts(arrays[name])
                key = (s.counter or name, w)
                plan = plans.get(key)
                if plan is None or plan[0] is not offsets and not np.array_equal(plan[0], offsets):
                    plan = plans[key] = (offsets, *_scatter_plan(offsets, w, width))
                _, dest, keep, clipped = plan
                if clipped and count:
                    self.truncated[name] = self.truncated.get(name, 0) + clipped
                values = content[offsets[0]:offsets[-1]]
                xf[dest + col] = values if keep is None else values[keep]
        return x

    def truncation_summary(self) -> str:
        """:attr:`truncated` in words, one item per counter (``nJet``) or branch; "" if none."""
        groups: dict[str, tuple[int, int]] = {}
        for name, n in self.truncated.items():
            key = self.specs.branches[name].counter or name
            branches, events = groups.get(key, (0, 0))
            groups[key] = (branches + 1, max(events, n))
        return ", ".join(f"{events} events in {key} ({branches} branches, jdim {self._jdim(key)})"
                         if branches > 1 else f"{events} events in {key} (jdim {self._jdim(key)})"
                         for key, (branches, events) in sorted(groups.items()))

    def _jdim(self, key: str) -> int:
        for name, s in self.specs.branches.items():
            if name == key or s.counter == key:
                return s.jdim
        return 0

    def transform(self, raw: np.ndarray, *, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Normalise and pad raw rows: return ``(x, mask)``, both ``(N, width)``.

        ``raw`` is ``(N, width)`` in physics units, NaN (or ±inf) where there is no value;
        ``x`` is float32 and ``mask`` True where ``raw`` held a finite value.  With
        ``copy=False`` a float32 ``raw`` is transformed in place.

        Raises
        ------
        DataFormatError
            If ``raw`` is not ``width`` columns wide, or holds finite values beyond float32's range
            (they would become infinite, and then read as empty slots).
        """
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.shape[1] != self.width:
            raise DataFormatError(f"raw rows must have shape (N, {self.width}) ({self.width} columns: "
                                  f"{self.columns[:4]}...), but got {list(raw.shape)}")
        if raw.dtype.kind == "f" and raw.dtype.itemsize > 4:
            big = np.isfinite(raw) & (np.abs(raw) > np.finfo(np.float32).max)
            if big.any():
                rows, cols = np.nonzero(big)
                raise DataFormatError(f"{len(rows)} raw values are beyond float32's range, e.g. "
                                      f"{raw[rows[0], cols[0]]:g} in column {self.columns[cols[0]]!r} of row {rows[0]}")
        x = raw.astype(np.float32, copy=copy)
        mask = np.isfinite(x)
        if self.normalise:
            x -= self._lo
            x *= self._scale
        x[~mask] = self.pad_value
        return x, mask

    def model_input(self, raw: np.ndarray) -> np.ndarray:
        """The network's ``(N, input_width)`` float32 input for raw rows (:meth:`transform`)."""
        x, mask = self.transform(raw)
        return np.concatenate([x, mask.astype(np.float32)], axis=1) if self.use_mask else x

    def to_dict(self) -> dict:
        """JSON-ready dict (see the module docstring)."""
        return {"format": PREPROCESSING_FORMAT, "version": _VERSION, "normalise": self.normalise,
                "pad_value": self.pad_value, "use_mask": self.use_mask, "identifiers": list(self.identifiers),
                "specs": self.specs.to_dict()}

    @classmethod
    def from_dict(cls, d: object, *, origin: object = None) -> Preprocessing:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        DataFormatError
            If ``d`` is not tpcflow ROOT preprocessing of a known version.
        """
        if not isinstance(d, dict) or d.get("format") != PREPROCESSING_FORMAT:
            raise DataFormatError(f"not tpcflow ROOT preprocessing (format must be {PREPROCESSING_FORMAT!r})",
                                  file_path=origin)
        if d.get("version") != _VERSION:
            raise DataFormatError(f"unsupported preprocessing version {d.get('version')!r} (expected {_VERSION})",
                                  file_path=origin)
        unknown = sorted(set(d) - {"format", "version", "normalise", "pad_value", "use_mask", "identifiers", "specs"})
        if unknown:
            raise DataFormatError(f"unknown preprocessing keys {unknown}", file_path=origin)
        try:
            return cls(Specs.from_dict(d.get("specs"), origin=origin), normalise=bool(d.get("normalise", True)),
                       pad_value=float(d.get("pad_value", 0.0)), use_mask=bool(d.get("use_mask", False)),
                       identifiers=[str(i) for i in d.get("identifiers", [])])
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"malformed preprocessing: {err}", file_path=origin) from None


def load_preprocessing(d: object, *, origin: object = None):
    """The preprocessing a served model's ``params.json`` declares: rows of a ROOT tree
    (:class:`Preprocessing`) or images (:class:`~tpcflow.loader.image_preprocess.ImagePreprocessing`).

    Raises
    ------
    DataFormatError
        If ``d`` is neither.
    """
    from tpcflow.loader.image_preprocess import IMAGE_PREPROCESSING_FORMAT, ImagePreprocessing

    if isinstance(d, dict) and d.get("format") == IMAGE_PREPROCESSING_FORMAT:
        return ImagePreprocessing.from_dict(d, origin=origin)
    return Preprocessing.from_dict(d, origin=origin)


def output_transform(scores: np.ndarray, kind: str) -> np.ndarray:
    """Apply a model's output transform to ``(N, K)`` (or ``(N,)``) scores, in float64.

    ``sigmoid``: ``1 / (1 + exp(-s))`` element-wise; ``softmax``: over the last axis;
    ``none``: the scores unchanged.

    Raises
    ------
    ConfigError
        For another ``kind``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if kind == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * s))  # the logistic function without overflow for large |s|
    if kind == "softmax":
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if kind == "none":
        return s
    raise ConfigError(f"output transform must be one of {OUTPUT_TRANSFORMS}, but got {kind!r}")
