"""Lazy imports of optional or heavy third-party modules, with install hints (uproot's extras pattern)."""

from __future__ import annotations

import importlib

__all__ = ["require"]

_HINTS = {
    "uproot": "pip install uproot",
    "awkward": "pip install awkward",
    "fsspec_xrootd": "pip install 'tpcflow[xrootd]'  (fsspec-xrootd, for root:// URLs)",
    "lz4": "pip install lz4",
    "zstandard": "pip install zstandard",
    "onnxruntime": "pip install 'tpcflow[onnx]'",
}


def require(module: str):
    """Import ``module`` or raise ``ModuleNotFoundError`` naming the pip line that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        hint = _HINTS.get(module, f"pip install {module}")
        raise ModuleNotFoundError(f"{module} is needed for this feature; install it with: {hint}") from err
