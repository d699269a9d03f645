"""Training checkpoints: atomic writes every N iterations, keeping the newest K, exact resume.

A checkpoint is the tpcflow checkpoint format of
:func:`tpcflow.models.registry.save_checkpoint` (``{"format": "tpcflow-checkpoint",
"version": 1, "network": asdict(NetworkConfig), "model": state_dict, ...}``) with the
training state in the extra keys ``optimizer``, ``scheduler``, ``scaler``, ``rng``,
``loader`` and ``iteration``.  The RNG states (python, numpy, torch, CUDA) are stored as
plain types so that the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tpcflow.errors import ConfigError, DataFormatError

__all__ = [
    "CheckpointManager",
    "check_network_matches",
    "get_rng_state",
    "read_checkpoint",
    "require_keys",
    "set_rng_state",
]

_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def get_rng_state() -> dict:
    """Capture the python, numpy (global), torch and CUDA RNG states as plain types."""
    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states captured by :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a tpcflow checkpoint dict.

    Raises
    ------
    DataFormatError
        If the file is missing, unreadable, or not a tpcflow checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError("checkpoint file does not exist", file_path=path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise DataFormatError(f"cannot read checkpoint: {type(err).__name__}: {err}", file_path=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "tpcflow-checkpoint":
        raise DataFormatError("not a tpcflow checkpoint (no format='tpcflow-checkpoint' key)", file_path=path)
    return ckpt


def check_network_matches(saved: dict | None, expected, path) -> None:
    """Raise ConfigError naming each network field where a checkpoint differs from the config.

    Parameters
    ----------
    saved : dict
        The checkpoint's ``network`` entry (``dataclasses.asdict`` of its NetworkConfig).
    expected : NetworkConfig
        The configuration the run asks for.
    """
    if saved is None:
        return
    want = dataclasses.asdict(expected)
    diff = [k for k in sorted(set(saved) | set(want)) if _norm(saved.get(k)) != _norm(want.get(k))]
    if diff:
        fix = " ".join(f"network.{k}={saved.get(k)}" for k in diff)
        rows = "\n".join(f"  network.{k}: checkpoint {saved.get(k)!r}, config {want.get(k)!r}" for k in diff)
        raise ConfigError(
            f"checkpoint was trained with another network configuration:\n{rows}\n"
            f"to use this checkpoint, set: {fix}\nin file {path}"
        )


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


class CheckpointManager:
    """Write ``<dir>/checkpoint-<iteration>.pt`` atomically and keep the newest ``keep``.

    Parameters
    ----------
    directory : path
    keep : int
        Number of checkpoints kept (older ones are deleted after a successful write).
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory)
        self.keep = max(1, int(keep))

    def list(self) -> list[Path]:
        """Checkpoints in the directory, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1] if found else None

    def save(self, iteration: int, model, network_config, extra: dict) -> Path:
        """Save via :func:`tpcflow.models.registry.save_checkpoint` to a temp file, then rename."""
        from tpcflow.models.registry import save_checkpoint

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"checkpoint-{iteration:08d}.pt"
        tmp = self.directory / f".checkpoint-{iteration:08d}.pt.tmp{os.getpid()}"
        save_checkpoint(tmp, model, network_config, extra=dict(extra, iteration=iteration))
        os.replace(tmp, path)
        for old in self.list()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, network_config, map_location="cpu") -> dict | None:
        """Return the newest checkpoint's dict (after checking its network config), or None."""
        path = self.latest()
        if path is None:
            return None
        ckpt = read_checkpoint(path, map_location)
        check_network_matches(ckpt.get("network"), network_config, path)
        return ckpt


def require_keys(ckpt: dict, keys, path) -> None:
    """Raise ConfigError if the checkpoint lacks the training state needed to resume."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ConfigError(f"checkpoint has no training state {missing}; it cannot be resumed (set run.resume=false)\nin file {path}")
