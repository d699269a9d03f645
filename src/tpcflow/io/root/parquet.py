"""Parquet files beside ROOT: the same reader interface, columns as branches.

A Parquet file written by awkward (``ak.to_parquet``), pandas or pyarrow holds one table;
its numeric columns are flat branches and its lists of numbers jagged ones, as in a
NanoAOD tree.  :class:`ParquetReader` is a :class:`~tpcflow.io.root.DataReader` over it, so
that the generator, ``root-train`` and ``root-predict`` take ``.parquet`` files unchanged.
Reading goes by row groups (pyarrow), converted with ``ak.from_arrow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.io.root.reader import BranchNotFoundError, DataReader, UnreadableBranchError, _matches
from tpcflow.io.root.specs import BranchSpec

__all__ = ["PARQUET_SUFFIXES", "ParquetReader", "open_reader"]

PARQUET_SUFFIXES = (".parquet", ".pq")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError("reading Parquet needs pyarrow: pip install 'tpcflow[parquet]'") from None
    return pyarrow


def open_reader(source, **kwargs) -> DataReader:
    """A :class:`ParquetReader` for ``.parquet``/``.pq`` files, else a ROOT :class:`DataReader`."""
    if str(source).lower().endswith(PARQUET_SUFFIXES):
        kwargs.pop("tree", None)  # one table per file
        return ParquetReader(source, **kwargs)
    return DataReader(source, **kwargs)


class ParquetReader(DataReader):
    """Read the numeric columns of a local Parquet file (see the module docstring).

    Parameters are those of :class:`DataReader`, less ``tree``.

    Raises
    ------
    ConfigError
        If pyarrow is not installed.
    DataFormatError
        If the file cannot be read as Parquet.
    BranchNotFoundError, UnreadableBranchError
        As for ROOT files.
    """

    def _open(self):
        pa = _pyarrow()
        try:
            self._file = pa.parquet.ParquetFile(self.source)
        except (OSError, pa.ArrowException) as err:
            raise DataFormatError(f"cannot read the file as Parquet: {err}", file_path=self.source) from None
        self.tree_name = self.tree_name or Path(self.source).stem
        meta = self._file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._tree = self._file

    def _classify_column(self, field) -> BranchSpec | str:
        pa = _pyarrow()
        t = field.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return BranchSpec(kind="flat", dtype=np.dtype(t.to_pandas_dtype()).name)
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
                pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
                or pa.types.is_boolean(t.value_type)):
            return BranchSpec(kind="jagged", dtype=np.dtype(t.value_type.to_pandas_dtype()).name)
        return f"column type {t} is not a number or a list of numbers"

    def _select(self) -> None:
        schema = self._file.schema_arrow
        names = [f.name for f in schema]
        for p in self.include or []:
            if not (set(p) & set("*?[")) and p not in names:
                raise BranchNotFoundError(p, available=names, file_path=self.source, object_path=self.tree_name)
        named = [p for p in (self.include or []) if not (set(p) & set("*?["))]
        for f in schema:
            if self.include is not None and not _matches(f.name, self.include):
                continue
            if _matches(f.name, self.exclude):
                continue
            got = self._classify_column(f)
            if isinstance(got, BranchSpec):
                self.branches[f.name] = got
            elif _matches(f.name, named):
                raise UnreadableBranchError(f.name, got, file_path=self.source, object_path=self.tree_name)
            else:
                self.skipped[f.name] = got

    def trees(self) -> dict[str, int]:
        """The file's one table, by the file's stem."""
        return {self.tree_name: int(self.tree.metadata.num_rows)}

    def all_branches(self) -> list[str]:
        """Every column of the table."""
        return [f.name for f in self.tree.schema_arrow]

    def is_jagged(self, name: str) -> bool:
        pa = _pyarrow()
        t = self.tree.schema_arrow.field(name).type
        return pa.types.is_list(t) or pa.types.is_large_list(t)

    @property
    def num_entries(self) -> int:
        n = int(self.tree.metadata.num_rows)
        return n if self.nevts is None else min(n, self.nevts)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._tree = None, None

    def _read_once(self, start: int, stop: int, names: list[str]) -> dict:
        import awkward as ak

        self.tree  # noqa: B018  (re-opens after unpickling)
        if stop <= start:
            groups = []
        else:
            first = int(np.searchsorted(self._starts, start, side="right")) - 1
            last = int(np.searchsorted(self._starts, stop, side="left"))
            groups = list(range(first, last))
        table = self._file.read_row_groups(groups, columns=names) if groups else None
        offset = int(self._starts[groups[0]]) if groups else 0
        out = {}
        for name in names:
            if table is None:
                out[name] = np.empty(0)
                continue
            column = ak.from_arrow(table.column(name))[start - offset:stop - offset]
            # nullable columns (pandas, pyarrow): a null list is an empty one, a null number no value (NaN)
            if "?" in str(column.type) and self.is_jagged(name):
                column = ak.fill_none(column, [], axis=0)
            if "?" in str(column.type):
                column = ak.fill_none(ak.values_astype(column, np.float64), np.nan, axis=-1)
            flat = name in self.branches and self.branches[name].kind == "flat"
            out[name] = ak.to_numpy(column) if flat else column
        return out

    def _explain_failure(self, err: Exception, start: int, stop: int, names: list[str]):
        raise DataFormatError(f"reading rows [{start}, {stop}) of {names[:5]} failed: {err}",
                              file_path=self.source) from err
