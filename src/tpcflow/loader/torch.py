"""Torch conversion of loader batches (the only loader module that imports torch).

A batch from a storage slot is a dict of numpy views valid until the next batch.
:func:`batch_to_torch` wraps them with ``torch.from_numpy`` (no copy, same lifetime), or
copies them into fresh (optionally pinned) tensors.  Pinned memory is used only when
``torch.cuda.is_available()``: pinning needs a CUDA driver and gains nothing without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["batch_to_torch", "pin_available"]


def pin_available() -> bool:
    """True if pinned (page-locked) host memory can be used: CUDA is available."""
    return bool(torch.cuda.is_available())


def batch_to_torch(batch: dict[str, np.ndarray], *, pin_memory: bool = False, copy: bool = False) -> dict:
    """Convert ``{name: ndarray}`` to ``{name: torch.Tensor}``.

    Parameters
    ----------
    batch : dict of numpy arrays
    pin_memory : bool
        Copy into pinned memory when CUDA is available (else a plain copy, or none if ``copy`` is False).
    copy : bool
        Copy even without pinning, so the tensors outlive the storage slot.

    Returns
    -------
    dict of torch.Tensor
        Same shapes and dtypes (float32 -> torch.float32, int64 -> torch.int64, uint8 -> torch.uint8, ...).
    """
    pin = pin_memory and pin_available()
    out = {}
    for name, arr in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if pin:
            dst = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            dst.copy_(t)
            t = dst
        elif copy:
            t = t.clone()
        out[name] = t
    return out
