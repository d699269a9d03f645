"""larcv3 HDF5 format (larcv 3.5.1 IOManager schema): reader, writer and schema."""

from __future__ import annotations

from .reader import Larcv3Reader, SparseBlock, open_larcv3
from .writer import Larcv3Writer, write_larcv3

__all__ = ["Larcv3Reader", "Larcv3Writer", "SparseBlock", "open_larcv3", "write_larcv3"]
