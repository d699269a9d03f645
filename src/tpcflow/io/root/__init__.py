"""ROOT TTrees for training (tpcflow's MLaaS4HEP data-streaming layer), on uproot 5 and awkward 2.

* :class:`DataReader` -- one tree of one file (local, HTTP(S), XRootD): branch selection by
  globs, chunked reading, and the first pass that collects :class:`Specs`.
* :class:`ParquetReader` -- the same over a Parquet table; :func:`open_reader` picks by suffix.
* :class:`Specs` / :class:`BranchSpec` -- flat/jagged kind, value range, jdim, NaN counts;
  :func:`save_specs`, :func:`load_specs`, :func:`merge_specs`.
* :func:`summarize` / :func:`format_summary` -- what ``tpcflow info FILE.root`` prints.

Padding, normalisation and batching live in :mod:`tpcflow.loader.root_generator`.
"""

from tpcflow.io.root._source import RemoteSourceError, is_remote, open_root
from tpcflow.io.root.parquet import ParquetReader, open_reader
from tpcflow.io.root.reader import BranchNotFoundError, DataReader, UnreadableBranchError, flat_numpy, jagged_parts
from tpcflow.io.root.specs import BranchSpec, Specs, load_specs, merge_specs, save_specs
from tpcflow.io.root.summary import format_summary, summarize

__all__ = [
    "BranchNotFoundError",
    "BranchSpec",
    "DataReader",
    "ParquetReader",
    "RemoteSourceError",
    "Specs",
    "UnreadableBranchError",
    "flat_numpy",
    "format_summary",
    "is_remote",
    "jagged_parts",
    "load_specs",
    "merge_specs",
    "open_reader",
    "open_root",
    "save_specs",
    "summarize",
]
