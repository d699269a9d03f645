"""Where and how a network runs: the device, the precision, and one torch model runner.

The one home of these three concepts for training, inference and both services.

Precision vocabulary (CosmicTagger's ``run.precision``), with the short names accepted:

=============  ===========  ==============================================================
name           aliases      autocast
=============  ===========  ==============================================================
``float32``    ``fp32``     none
``bfloat16``   ``bf16``     bfloat16
``mixed``      ``fp16``,    float16 on CUDA (training adds a GradScaler); bfloat16 on CPU,
               ``float16``  where float16 autocast is slow and has no GradScaler
=============  ===========  ==============================================================

Device names: ``auto`` (CUDA when present), ``cpu``, ``gpu`` / ``cuda`` (CUDA, an error
without it), or any torch device string such as ``cuda:1``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tpcflow.config.schema import PRECISION_ALIASES, PRECISIONS
from tpcflow.errors import ConfigError

__all__ = ["PRECISIONS", "TorchRunner", "autocast_context", "normalize_precision", "pick_device"]


def normalize_precision(name: str | None) -> str:
    """Return the canonical precision name (``None`` is ``float32``).

    Raises
    ------
    ConfigError
        If ``name`` is neither a precision nor an alias; the message lists both.
    """
    if name is None:
        return "float32"
    canon = PRECISION_ALIASES.get(name, name)
    if canon not in PRECISIONS:
        raise ConfigError(f"precision: {name!r} is not one of {', '.join(PRECISIONS)} "
                          f"(or the aliases {', '.join(PRECISION_ALIASES)})")
    return canon


def pick_device(name: str | torch.device | None = "auto", *, setting: str = "device") -> torch.device:
    """Return the torch device for ``name`` (see the module docstring); ``setting`` names the option in errors.

    Raises
    ------
    ConfigError
        If a CUDA device is asked for and none is available, or the name is not a device.
    """
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda") or str(name).startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{setting}={name} but no CUDA device is available; set {setting}=cpu or auto")
        return torch.device("cuda" if name == "gpu" else name)
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{setting}: {name!r} is not a torch device ({err})") from None


def autocast_context(precision: str, device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """Return a factory of the autocast context for ``precision`` and whether training needs a GradScaler.

    See the module docstring for what each precision does on each device.
    """
    precision = normalize_precision(precision)
    if precision == "float32":
        return contextlib.nullcontext, False
    if precision == "bfloat16" or device.type != "cuda":
        return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), False
    return (lambda: torch.autocast(device.type, dtype=torch.float16)), True


class TorchRunner:
    """A network in eval mode on its device, called under ``inference_mode`` and autocast.

    Parameters
    ----------
    model : nn.Module or TorchScript module
    device : str or torch.device
        As :func:`pick_device`.
    precision : str
        As :func:`normalize_precision`.
    threads : int, optional
        torch intra-op threads of the thread that calls the runner (``init_thread`` applies it:
        a new thread does not inherit it, and idle BLAS threads then spin).

    Notes
    -----
    ``runner(*tensors_or_arrays)`` moves each input to the device (numpy arrays without a copy
    on CPU) and returns the network's raw output (a tensor, a tuple or a dict of tensors).
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = "auto", precision: str | None = None,
                 threads: int | None = None):
        self.device = pick_device(device)
        self.precision = normalize_precision(precision)
        self._autocast, _ = autocast_context(self.precision, self.device)
        self.model = model.to(self.device).eval()
        self.threads = threads or torch.get_num_threads()

    def init_thread(self) -> None:
        """Apply ``threads`` in the calling thread."""
        torch.set_num_threads(self.threads)

    def __call__(self, *inputs):
        tensors = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.require(x, requirements=["C", "W"]))
                   for x in inputs]
        tensors = [t.to(self.device, non_blocking=True) for t in tensors]
        with torch.inference_mode(), self._autocast():
            return self.model(*tensors)

    def forward_sparse(self, planes, batch_size: int, shape: tuple[int, int]) -> list[torch.Tensor]:
        """The sparse network's per-voxel logits (``forward_sparse``) on the device, float32.

        ``planes``: per plane ``(coords (N_p, 3) int (batch index, y, x), features (N_p, 1))``,
        numpy or torch.

        Raises
        ------
        TypeError
            If the model has no ``forward_sparse``.
        """
        if not hasattr(self.model, "forward_sparse"):
            raise TypeError(f"{type(self.model).__name__} has no forward_sparse (not the sparse network)")
        moved = [(torch.as_tensor(c).to(self.device), torch.as_tensor(f).to(self.device)) for c, f in planes]
        with torch.inference_mode(), self._autocast():
            return [lg.float() for lg in self.model.forward_sparse(moved, batch_size, shape)]

    def describe(self) -> str:
        """``"cuda:0, bfloat16"``-style summary for start-up lines."""
        return f"{self.device}, {self.precision}"
