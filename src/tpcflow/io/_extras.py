"""Imports of truly optional third-party modules, with the install hint (uproot's extras pattern).

Hard dependencies (uproot, awkward, lz4, zstandard) are imported plainly where they are used.
"""

from __future__ import annotations

import importlib

__all__ = ["require"]

_HINTS = {
    "fsspec_xrootd": "pip install 'tpcflow[xrootd]'  (fsspec-xrootd, for root:// URLs)",
}


def require(module: str):
    """Import the optional ``module`` or raise ``ModuleNotFoundError`` naming the pip line that installs it.

    Raises
    ------
    ModuleNotFoundError
        If it is not installed; the message gives the install command.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        hint = _HINTS.get(module, f"pip install {module}")
        raise ModuleNotFoundError(f"{module} is needed for this feature; install it with: {hint}") from err
