"""Network checkpoints: atomic save, safe load, and clear errors for mismatched configurations.

Format (``torch.save`` of a dict, version 1)::

    {"format": "tpcflow-checkpoint", "version": 1,
     "network": dataclasses.asdict(NetworkConfig), "model": state_dict, **extra}

``extra`` holds what the trainer adds ("optimizer", "scheduler", "rng", "loader", "iteration")
and ``"data"``, the resolution the network was trained at (:func:`data_section`).
State-dict keys never carry the ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefixes:
they are removed as whole prefixes (CosmicTagger strips them with a character-set ``lstrip``,
reference spec section 6, item 9).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from tpcflow import atomic
from tpcflow.config.network import PRESETS, NetworkConfig, network_config_from_dict
from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.models.registry import build_network

__all__ = [
    "FORMAT",
    "VERSION",
    "check_compatible",
    "data_section",
    "input_pooling",
    "config_differences",
    "is_torchscript",
    "load_model",
    "read_checkpoint",
    "restore_model",
    "save_checkpoint",
    "strip_prefixes",
    "torch_file_format",
    "unwrap_model",
]

FORMAT = "tpcflow-checkpoint"
VERSION = 1
_RESERVED = ("format", "version", "network", "model")
_PREFIXES = ("module.", "_orig_mod.")
#: fields that change neither the parameters nor the eval-mode outputs: ignored when loading for use
_NEUTRAL_FIELDS = ("name", "stack_planes")
#: of those, the ones that change training (train-mode BatchNorm statistics): checked on resume
_TRAINING_FIELDS = ("stack_planes",)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove leading ``module.`` / ``_orig_mod.`` prefixes (as whole prefixes) from every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


def data_section(downsample: int, image_shape: tuple[int, int]) -> dict[str, Any]:
    """The checkpoint's ``"data"`` entry: ``{"downsample": int, "image_shape": [H, W]}``.

    ``downsample`` is the run's ``data.downsample`` (images average-pooled by ``2**downsample``
    from the detector's grid); ``image_shape`` the per-plane size the network was trained on,
    CosmicTagger layout [pixels].  Inference and the MDP worker read it to feed the network
    images of the same resolution (:func:`input_pooling`).
    """
    h, w = (int(v) for v in image_shape)
    return {"downsample": int(downsample), "image_shape": [h, w]}


def input_pooling(data: Mapping[str, Any] | None, native_shape: tuple[int, int]) -> int | None:
    """The pooling ``k`` (images pooled by ``2**k``) that turns ``native_shape`` into the training shape.

    Parameters
    ----------
    data : the checkpoint's ``"data"`` entry (:func:`data_section`), or None (older checkpoints)
    native_shape : (H, W) of the images to run on, CosmicTagger layout, before any pooling

    Returns
    -------
    int or None
        The ``k >= 0`` with ``(H >> k, W >> k) == data["image_shape"]``; None when the checkpoint
        has no ``data`` entry or no power of two maps one shape onto the other (another grid).
    """
    if not data or "image_shape" not in data:
        return None
    th, tw = (int(v) for v in data["image_shape"])
    h, w = (int(v) for v in native_shape)
    for k in range(0, 16):
        if (h >> k, w >> k) == (th, tw) and h % (1 << k) == 0 and w % (1 << k) == 0:
            return k
        if (h >> k) < th or (w >> k) < tw:
            break
    return None


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: NetworkConfig,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    Parameters
    ----------
    path : path-like
        Destination; parent folders are created.
    model : nn.Module
        The network (DDP / compiled wrappers are unwrapped).
    config : NetworkConfig
        Its configuration, stored as ``dataclasses.asdict(config)`` under ``"network"``.
    extra : dict, optional
        More top-level entries (optimizer state, iteration...); may not use the reserved keys
        ``format``, ``version``, ``network``, ``model``.

    Returns
    -------
    Path
        The written path.
    """
    if not isinstance(config, NetworkConfig):
        raise ConfigError(f"save_checkpoint: config must be a NetworkConfig, but got {type(config).__name__}")
    extra = dict(extra or {})
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ConfigError(f"save_checkpoint: extra uses reserved key(s) {clash}; reserved: {list(_RESERVED)}")
    state = strip_prefixes(unwrap_model(model).state_dict())
    payload = {"format": FORMAT, "version": VERSION, "network": asdict(config), "model": state, **extra}
    return atomic.atomic_write(path, lambda tmp: torch.save(payload, tmp))


def torch_file_format(path: str | os.PathLike) -> str | None:
    """Tell a TorchScript archive from a ``torch.save`` pickle by the archive's members.

    The one detector for every loader (checkpoints, the MDP worker, the HTTP model server).

    Returns
    -------
    "torchscript", "checkpoint" or None
        ``torch.jit.save`` writes ``<archive>/code/`` (and ``constants.pkl``); ``torch.save``
        writes ``<archive>/data.pkl`` only; None for anything else (not a zip, a broken zip,
        an unreadable file).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    # members are "<archive>/<member>", the archive named after the file: judge the part below it
    # (a checkpoint saved as "code.pt" has members "code/data.pkl", which are not TorchScript code)
    inner = {n.split("/", 1)[1] for n in names if "/" in n}
    if "constants.pkl" in inner or any(m.startswith("code/") for m in inner):
        return "torchscript"
    if "data.pkl" in inner:
        return "checkpoint"
    return None


def is_torchscript(path: str | os.PathLike) -> bool:
    """True if ``path`` is a TorchScript archive (``torch.jit.save``), not a ``torch.save`` pickle."""
    return torch_file_format(path) == "torchscript"


def _safe_globals() -> list:
    # numpy objects that trainers commonly store (RNG state arrays); all are data, not code
    items: list = [np.ndarray, np.dtype]
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    items.append(_reconstruct)
    for name in ("UInt32DType", "Int64DType", "Float64DType", "UInt64DType", "Float32DType", "Int32DType"):
        dt = getattr(getattr(np, "dtypes", None), name, None)
        if dt is not None:
            items.append(dt)
    return items


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a tpcflow checkpoint dict with ``torch.load(weights_only=True)`` (no code execution).

    Raises
    ------
    DataFormatError
        If the file is missing, not a torch file, or not a tpcflow checkpoint (wrong ``format``
        or ``version``), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("checkpoint file does not exist", file_path=path)
    kind = torch_file_format(path)
    if kind != "checkpoint":
        what = "a TorchScript archive (torch.jit.save)" if kind == "torchscript" else "not a torch.save archive"
        raise DataFormatError(f"not a tpcflow checkpoint: the file is {what}", file_path=path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False, which would run the file's code: not repeated
        detail = str(err).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if str(err) else ""
        raise DataFormatError(
            "checkpoint holds objects other than plain data (tensors, numbers, strings, lists, dicts), which "
            f"tpcflow never unpickles (torch.load(weights_only=True) refused: {detail})",
            file_path=path,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataFormatError(f"not a readable torch checkpoint: {err}", file_path=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataFormatError(
            f"not a tpcflow checkpoint: format {got!r}, expected {FORMAT!r} (save it with save_checkpoint)",
            file_path=path, field="format",
        )
    if ckpt.get("version") != VERSION:
        raise DataFormatError(f"unsupported checkpoint version {ckpt.get('version')!r}, expected {VERSION}",
                              file_path=path, field="version")
    for key in ("network", "model"):
        if key not in ckpt:
            raise DataFormatError(f"checkpoint lacks the {key!r} entry", file_path=path, field=key)
    return ckpt


def config_differences(a: NetworkConfig, b: NetworkConfig, *, resume: bool = False,
                       warm_start: bool = False) -> list[tuple[str, Any, Any]]:
    """Fields (name, value in a, value in b) that differ and matter.

    For use (inference, serving) the fields that change the parameters or the eval-mode outputs
    matter; with ``resume=True`` also those that change training (``stack_planes``).  With
    ``warm_start=True`` (initial weights of a new training run) only the parameters matter: the
    dense ``2D`` and the ``sparse`` network have the same ones, so either starts the other.
    """
    ignored = tuple(f for f in _NEUTRAL_FIELDS if not (resume and f in _TRAINING_FIELDS))
    if warm_start and {a.conv_mode, b.conv_mode} <= {"2D", "sparse"}:
        ignored += ("conv_mode",)
    return [(f.name, getattr(a, f.name), getattr(b, f.name)) for f in fields(NetworkConfig)
            if f.name not in ignored and getattr(a, f.name) != getattr(b, f.name)]


def check_compatible(saved: NetworkConfig | Mapping[str, Any], current: NetworkConfig, where: object, *,
                     resume: bool = False, warm_start: bool = False) -> None:
    """Raise if a checkpoint's network configuration cannot be used as ``current``.

    The one rule for every reader of checkpoints (inference, serving, ``load_model``, resume):
    ``name`` never matters; ``stack_planes`` matters only on ``resume`` (the parameters and the
    eval-mode outputs are the same either way, training's BatchNorm statistics are not).

    Parameters
    ----------
    saved : NetworkConfig or dict
        The checkpoint's ``network`` entry.
    current : NetworkConfig
        The configuration asked for.
    where : path-like or str
        The checkpoint, for the message.
    resume : bool
        Checking for resumed training rather than for use.
    warm_start : bool
        Checking initial weights of a new training run (:func:`config_differences`).

    Raises
    ------
    ConfigError
        Listing each differing field and the override that fixes it.
    """
    if not isinstance(saved, NetworkConfig):
        try:
            saved = network_config_from_dict(saved)
        except ConfigError as err:
            raise ConfigError(f"{err}\nin file {where}, entry 'network'") from None
    if config_differences(saved, current, resume=resume, warm_start=warm_start):
        raise _mismatch_error(saved, current, str(where), resume=resume, warm_start=warm_start)


def _mismatch_error(saved: NetworkConfig, current: NetworkConfig, where: str, *, resume: bool = False,
                    warm_start: bool = False) -> ConfigError:
    diffs = config_differences(saved, current, resume=resume, warm_start=warm_start)
    lines = [f"  network.{k}: {v_saved!r} in the checkpoint, {v_cur!r} in this configuration"
             for k, v_saved, v_cur in diffs]
    fix = " ".join(f"network.{k}={v_saved}" for k, v_saved, _ in diffs)
    preset = [name for name, p in PRESETS.items() if not config_differences(p, saved, resume=resume)]
    hint = f"network={preset[0]}" if preset else fix
    return ConfigError(
        f"checkpoint {where} was written by a different network configuration:\n" + "\n".join(lines)
        + f"\nTo use it, set {hint}; or start a fresh run (a new run.id) to train this configuration."
    )


def restore_model(model: nn.Module, config: NetworkConfig, checkpoint: Mapping[str, Any], *,
                  file_path: str | os.PathLike | None = None, warm_start: bool = False) -> nn.Module:
    """Load ``checkpoint["model"]`` into ``model`` built from ``config``, checking compatibility.

    ``warm_start=True``: the initial weights of a new training run; a dense ``2D`` checkpoint
    may start the ``sparse`` network and the other way round (:func:`config_differences`).

    Raises
    ------
    ConfigError
        If the checkpoint's network configuration differs from ``config`` in a field that changes
        the parameters (the message lists each field and the override that fixes it), or the
        state dict does not fit the model (missing / unexpected keys, shape mismatches).
    """
    where = str(file_path) if file_path is not None else "(in memory)"
    if "network" in checkpoint:
        check_compatible(checkpoint["network"], config, where, warm_start=warm_start)
    state = strip_prefixes(checkpoint["model"] if "model" in checkpoint else checkpoint)
    target = unwrap_model(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:5]}")
        if shapes:
            parts.append("shape mismatches: " + ", ".join(f"{k} {s} (checkpoint) vs {o} (model)"
                                                          for k, s, o in shapes[:5]))
        raise ConfigError(
            f"checkpoint {where} does not fit the network built from this configuration "
            f"(n_initial_filters={config.n_initial_filters}, network_depth={config.network_depth}, "
            f"conv_mode={config.conv_mode!r}): " + "; ".join(parts)
            + "\nUse the network.* settings the checkpoint was trained with."
        )
    target.load_state_dict(state, strict=True)
    return model


def load_model(path: str | os.PathLike, map_location: Any = "cpu", *,
               expected: NetworkConfig | None = None,
               data: dict[str, Any] | None = None) -> tuple[nn.Module, NetworkConfig | None]:
    """Load a network from a tpcflow checkpoint or a TorchScript file.

    Parameters
    ----------
    path : path-like
        ``save_checkpoint`` output, or a ``torch.jit.save`` archive.
    map_location : str or torch.device
        Where to put the tensors.
    expected : NetworkConfig, optional
        If given, a checkpoint written by another configuration raises :class:`ConfigError`.
    data : dict, optional
        Filled with the checkpoint's ``"data"`` entry (:func:`data_section`) when it has one.

    Returns
    -------
    (nn.Module, NetworkConfig or None)
        The network in eval mode, and its configuration (``None`` for TorchScript).

    Raises
    ------
    DataFormatError
        If the file is missing or not a checkpoint.
    ConfigError
        If the stored configuration is invalid, differs from ``expected``, or does not fit its
        state dict.
    """
    path = Path(path)
    if is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location=map_location)
        except RuntimeError as err:
            raise DataFormatError(f"not a loadable TorchScript file: {err}", file_path=path) from None
        return module.eval(), None
    ckpt = read_checkpoint(path, map_location)
    if data is not None and isinstance(ckpt.get("data"), Mapping):
        data.update(ckpt["data"])
    try:
        config = network_config_from_dict(ckpt["network"])
    except ConfigError as err:
        raise ConfigError(f"{err}\nin file {path}, entry 'network'") from None
    if expected is not None:
        check_compatible(config, expected, path)
    model = build_network(config)
    restore_model(model, config, ckpt, file_path=path)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), config
