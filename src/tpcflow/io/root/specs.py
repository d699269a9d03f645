"""Branch specs of a ROOT TTree: flat/jagged kind, value range, maximum multiplicity, NaN counts.

The specs are what the MLaaS4HEP "first pass" collects (arXiv:1811.04492, ``reader.py``):
they fix the width of every row the :class:`~tpcflow.loader.root_generator.DataGenerator`
produces and the min/max used to normalise it.  They are saved as JSON and merged across
files.

JSON layout (``format = "tpcflow-root-specs"``, ``version = 1``)::

    {"format": ..., "version": 1, "tree": "Events", "files": [...], "nevents": 200,
     "branches": {"Jet_pt": {"kind": "jagged", "dtype": "float32", "dim": 1, "jdim": 9,
                             "min": 15.0, "max": 412.5, "nan": 0, "inf": 0, "values": 1210,
                             "counter": "nJet"}, ...},
     "skipped": {"Type": "strings (AsStrings) are not numeric"}}

``min``/``max`` are taken over finite values only (``null`` when there are none); NaN and
±inf values are counted in ``nan`` and ``inf``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tpcflow import atomic
from tpcflow.errors import ConfigError, DataFormatError

__all__ = ["SPECS_FORMAT", "BranchSpec", "Specs", "load_specs", "merge_specs", "save_specs"]

SPECS_FORMAT = "tpcflow-root-specs"
_VERSION = 1


@dataclass
class BranchSpec:
    """Spec of one numeric branch.

    Attributes
    ----------
    kind : {"flat", "jagged"}
        ``flat``: one value (or a fixed ``dim``-sized array) per event.  ``jagged``: a variable
        number of values per event (NanoAOD ``float[nX]`` or ATLAS ``std::vector<T>``).
    dtype : str
        numpy dtype name of the values.
    dim : int
        Values per event of a flat branch (1 for scalars, ``prod(shape)`` for ``float[3]``).
    jdim : int
        Maximum multiplicity seen (jagged branches; 0 for flat ones).
    min, max : float or None
        Range of the finite values; None if no finite value was seen.
    nan, inf : int
        Number of NaN and of ±inf values.
    values : int
        Number of values seen.
    counter : str or None
        Counter branch of a NanoAOD-style jagged branch (``nJet`` for ``Jet_pt``).
    """

    kind: str
    dtype: str
    dim: int = 1
    jdim: int = 0
    min: float | None = None
    max: float | None = None
    nan: int = 0
    inf: int = 0
    values: int = 0
    counter: str | None = None

    @property
    def width(self) -> int:
        """Columns this branch takes in a generator row: ``dim`` (flat) or ``jdim`` (jagged)."""
        return self.dim if self.kind == "flat" else self.jdim

    def update(self, values: np.ndarray, *, jdim: int = 0) -> None:
        """Fold the statistics of ``values`` (any shape, numeric) into this spec."""
        v = np.asarray(values)
        if v.dtype == np.bool_:
            v = v.view(np.uint8)
        self.jdim = max(self.jdim, int(jdim))
        self.values += int(v.size)
        if v.size == 0:
            return
        if v.dtype.kind == "f":
            finite = np.isfinite(v)
            n_bad = int(v.size - np.count_nonzero(finite))
            if n_bad:
                n_nan = int(np.count_nonzero(np.isnan(v)))
                self.nan += n_nan
                self.inf += n_bad - n_nan
                v = v[finite]
                if v.size == 0:
                    return
        lo, hi = float(v.min()), float(v.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def merged(self, other: BranchSpec, name: str = "?") -> BranchSpec:
        """Return the spec covering both ``self`` and ``other`` (same kind required)."""
        if other.kind != self.kind or other.dim != self.dim:
            raise DataFormatError(
                f"branch {name!r} is {self.kind} (dim {self.dim}) in one file and {other.kind} "
                f"(dim {other.dim}) in another; specs cannot be merged"
            )
        lo = [x for x in (self.min, other.min) if x is not None]
        hi = [x for x in (self.max, other.max) if x is not None]
        return BranchSpec(
            kind=self.kind, dtype=str(np.result_type(self.dtype, other.dtype)), dim=self.dim,
            jdim=max(self.jdim, other.jdim), min=min(lo) if lo else None, max=max(hi) if hi else None,
            nan=self.nan + other.nan, inf=self.inf + other.inf, values=self.values + other.values,
            counter=self.counter or other.counter,
        )


@dataclass
class Specs:
    """Specs of the selected branches of one tree, over one or more files.

    ``branches`` keeps tree order; :meth:`columns` lists flat branches first, then jagged ones.
    """

    tree: str
    files: list[str] = field(default_factory=list)
    nevents: int = 0
    branches: dict[str, BranchSpec] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def flat(self) -> list[str]:
        """Names of the flat branches, in tree order."""
        return [n for n, s in self.branches.items() if s.kind == "flat"]

    @property
    def jagged(self) -> list[str]:
        """Names of the jagged branches, in tree order."""
        return [n for n, s in self.branches.items() if s.kind == "jagged"]

    def layout(self) -> list[tuple[str, int, int]]:
        """Return ``(branch, first column, width)`` for every branch: flat first, then jagged."""
        out, col = [], 0
        for name in self.flat + self.jagged:
            w = self.branches[name].width
            out.append((name, col, w))
            col += w
        return out

    @property
    def width(self) -> int:
        """Total number of columns of a generator row."""
        return sum(s.width for s in self.branches.values())

    def columns(self) -> list[str]:
        """Column names: ``name`` for a scalar flat branch, ``name[i]`` otherwise."""
        cols = []
        for name, _, w in self.layout():
            s = self.branches[name]
            cols.extend([name] if (s.kind == "flat" and w == 1) else [f"{name}[{i}]" for i in range(w)])
        return cols

    def to_dict(self) -> dict:
        """Return the JSON-ready dict (see the module docstring)."""
        return {
            "format": SPECS_FORMAT, "version": _VERSION, "tree": self.tree, "files": list(self.files),
            "nevents": self.nevents, "branches": {n: asdict(s) for n, s in self.branches.items()},
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_dict(cls, d: dict, *, origin: object = None) -> Specs:
        """Build specs from :meth:`to_dict` output; ``origin`` names the source in errors.

        Raises
        ------
        DataFormatError
            If the dict is not tpcflow ROOT specs or a branch entry is malformed.
        """
        if not isinstance(d, dict) or d.get("format") != SPECS_FORMAT:
            raise DataFormatError(f"not tpcflow ROOT specs (format must be {SPECS_FORMAT!r})", file_path=origin)
        if d.get("version") != _VERSION:
            raise DataFormatError(f"unsupported specs version {d.get('version')!r} (expected {_VERSION})",
                                  file_path=origin)
        branches = {}
        for name, b in d.get("branches", {}).items():
            try:
                spec = BranchSpec(**b)
            except TypeError as err:
                raise DataFormatError(f"malformed branch spec: {err}", file_path=origin, field=name) from err
            if spec.kind not in ("flat", "jagged"):
                raise DataFormatError(f"branch kind {spec.kind!r} must be 'flat' or 'jagged'",
                                      file_path=origin, field=name)
            branches[name] = spec
        return cls(tree=str(d.get("tree", "")), files=list(d.get("files", [])), nevents=int(d.get("nevents", 0)),
                   branches=branches, skipped=dict(d.get("skipped", {})))


def save_specs(specs: Specs, path: str | Path) -> Path:
    """Write specs as JSON atomically (temp file + rename); return the path."""
    return atomic.write_text(path, json.dumps(specs.to_dict(), indent=1, allow_nan=False))


def load_specs(path: str | Path) -> Specs:
    """Read specs written by :func:`save_specs`.

    Raises
    ------
    DataFormatError
        If the file is missing, is not JSON, or is not tpcflow ROOT specs.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataFormatError("specs file does not exist", file_path=path) from err
    except json.JSONDecodeError as err:
        raise DataFormatError(f"specs file is not valid JSON: {err}", file_path=path) from err
    return Specs.from_dict(d, origin=path)


def merge_specs(specs: list[Specs]) -> Specs:
    """Merge the specs of several files of the same tree.

    Ranges widen, ``jdim`` takes the maximum, counts add; the branch set is the union
    (first file's order first).  Raises ConfigError for an empty list and DataFormatError
    if trees differ or a branch changes kind.
    """
    if not specs:
        raise ConfigError("merge_specs needs at least one Specs")
    trees = {s.tree for s in specs}
    if len(trees) > 1:
        raise DataFormatError(f"cannot merge specs of different trees: {sorted(trees)}")
    out = Specs(tree=specs[0].tree)
    for s in specs:
        out.files.extend(f for f in s.files if f not in out.files)
        out.nevents += s.nevents
        for name, b in s.branches.items():
            out.branches[name] = out.branches[name].merged(b, name) if name in out.branches else BranchSpec(**asdict(b))
        for name, why in s.skipped.items():
            out.skipped.setdefault(name, why)
    return out

