"""Trained models exported for serving: TorchScript archive and JSON, written atomically."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from tpcflow.atomic import atomic_write, write_text

__all__ = ["save_torchscript", "write_json"]


def write_json(path: Path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return write_text(path, json.dumps(obj, indent=1) + "\n")


def save_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace ``model`` (in eval mode) on ``example`` and save a TorchScript archive (``torch.jit.save``).

    TorchScript is what the HTTP model server loads for arbitrary user models; torch 2.13
    marks ``torch.jit.trace`` deprecated, so that one warning is silenced here.
    """
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example)
        return atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))
    finally:
        model.train(was_training)
