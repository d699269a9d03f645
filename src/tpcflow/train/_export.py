"""Atomic writes of trained models for serving: TorchScript archive, state dict, JSON, labels."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = ["atomic_write", "save_torchscript", "write_json"]


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1) + "\n"))


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
