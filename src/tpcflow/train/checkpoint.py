"""Training checkpoints: rotation (every N iterations, keeping the newest K) and the RNG state.

The format, its safe reading and the compatibility rule live in :mod:`tpcflow.models.checkpoint`
(``{"format": "tpcflow-checkpoint", "version": 1, "network": asdict(NetworkConfig),
"model": state_dict, ...}``); training adds the extra keys ``optimizer``, ``scheduler``,
``scaler``, ``rng``, ``loader`` and ``iteration``.  The RNG states (python, numpy, torch, CUDA) are stored as
plain types so that the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from tpcflow.errors import ConfigError
from tpcflow.models.checkpoint import check_compatible, read_checkpoint, save_checkpoint

__all__ = [
    "CheckpointManager",
    "get_rng_state",
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
        """Write ``checkpoint-<iteration>.pt`` (atomically, :func:`save_checkpoint`), then drop the oldest."""
        path = self.directory / f"checkpoint-{iteration:08d}.pt"
        save_checkpoint(path, model, network_config, extra=dict(extra, iteration=iteration))
        for old in self.list()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    @property
    def best_path(self) -> Path:
        """``<dir>/best.pt``: the checkpoint of the best validation so far (never rotated)."""
        return self.directory / "best.pt"

    def save_best(self, iteration: int, model, network_config, extra: dict) -> Path:
        """Write ``best.pt`` atomically (model, network, ``extra`` such as the metric and the data section)."""
        save_checkpoint(self.best_path, model, network_config, extra=dict(extra, iteration=iteration))
        return self.best_path

    def load_latest(self, network_config, map_location="cpu") -> dict | None:
        """Return the newest checkpoint's dict, or None if there is none.

        Raises
        ------
        DataFormatError
            If it is not a readable tpcflow checkpoint.
        ConfigError
            If it was trained with another network configuration (``stack_planes`` included).
        """
        path = self.latest()
        if path is None:
            return None
        ckpt = read_checkpoint(path, map_location)
        check_compatible(ckpt["network"], network_config, path, resume=True)
        return ckpt


def require_keys(ckpt: dict, keys, path) -> None:
    """Raise ConfigError if the checkpoint lacks the training state needed to resume."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ConfigError(f"checkpoint has no training state {missing}; it cannot be resumed (set run.resume=false)\nin file {path}")
