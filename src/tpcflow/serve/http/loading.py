"""Load a model file into a runner: ``runner(inputs: list[ndarray]) -> list[ndarray]``.

Formats (detected from the file's content, not its name, except ONNX):

* TorchScript archive (``torch.jit.save``: a zip holding ``<archive>/code/``);
* tpcflow checkpoint (``torch.save`` dict, ``"format": "tpcflow-checkpoint"``), loaded
  through :func:`tpcflow.models.checkpoint.load_model`;
* ONNX (``.onnx``), through onnxruntime when it is installed (optional extra ``onnx``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tpcflow.serve.http.errors import ModelExecutionError, ModelFormatError

__all__ = ["FORMAT_FILES", "ModelFn", "detect_format", "load_runner", "onnx_available"]

ModelFn = Callable[[list[np.ndarray]], list[np.ndarray]]

#: format -> file name of the model inside a version directory
FORMAT_FILES = {"torchscript": "model.pt", "checkpoint": "model.pt", "onnx": "model.onnx"}


def onnx_available() -> bool:
    """Whether onnxruntime can be imported."""
    return importlib.util.find_spec("onnxruntime") is not None


#: the field tags that may follow ``ir_version`` at the start of an ONNX ``ModelProto``
#: (fields 2-8: producer_name, producer_version, domain, model_version, doc_string, graph, opset_import)
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def looks_like_onnx(path: Path) -> bool:
    """Whether a file starts as an ONNX ``ModelProto``: field 1 ``ir_version`` (a small varint), then another field.

    Source: onnx/onnx.proto (``ModelProto``: ir_version = 1, producer_name = 2, ..., graph = 7,
    opset_import = 8); protobuf tags are ``field << 3 | wire_type``.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 3 or head[0] != 0x08:
        return False
    i, version = 1, 0
    while i < len(head) and i < 6:
        version |= (head[i] & 0x7F) << (7 * (i - 1))
        i += 1
        if not head[i - 1] & 0x80:
            break
    return 1 <= version <= 64 and i < len(head) and head[i] in _ONNX_NEXT_TAGS


def detect_format(path: Path, filename: str | None = None) -> str:
    """Return ``"torchscript"``, ``"checkpoint"`` or ``"onnx"`` for a model file, by its content.

    Raises
    ------
    ModelFormatError
        If the file is none of them.
    """
    from tpcflow.models.checkpoint import torch_file_format

    fmt = torch_file_format(path)
    if fmt is not None:
        return fmt
    if looks_like_onnx(path):
        return "onnx"
    raise ModelFormatError(
        "model file is not a TorchScript archive (torch.jit.save), a tpcflow checkpoint (torch.save) "
        "or an ONNX file (*.onnx)",
        file_path=filename or path.name,
    )


def _torch_runner(module, name: str, threads: int | None = None) -> ModelFn:
    from tpcflow.models.runtime import TorchRunner

    runner = TorchRunner(module, device="cpu", threads=threads)

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            out = runner(*inputs)
        except Exception as err:  # torch raises RuntimeError/TypeError/IndexError... on bad shapes
            shapes = ", ".join(str(tuple(a.shape)) for a in inputs)
            msg = str(err).strip().splitlines()
            raise ModelExecutionError(
                f"model {name!r} failed on inputs of shape {shapes}: {msg[-1] if msg else type(err).__name__}"
            ) from None
        return _outputs_to_numpy(out, name)

    run.init_thread = runner.init_thread  # type: ignore[attr-defined]
    return run


def _outputs_to_numpy(out, name: str) -> list[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        outs = [out]
    elif isinstance(out, (tuple, list)):
        outs = list(out)
    elif isinstance(out, dict):
        outs = list(out.values())
    else:
        raise ModelExecutionError(f"model {name!r} returned {type(out).__name__}, expected tensors")
    arrays = []
    for o in outs:
        if not isinstance(o, torch.Tensor):
            raise ModelExecutionError(f"model {name!r} returned a {type(o).__name__} output, expected tensors")
        arrays.append(o.detach().cpu().numpy())
    return arrays


def _onnx_runner(path: Path, name: str, input_names: list[str]) -> ModelFn:
    if not onnx_available():
        raise ModelFormatError(
            "ONNX models need onnxruntime, which is not installed (pip install 'tpcflow[onnx]')",
            file_path=path.name,
        )
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFormatError(f"onnxruntime cannot load the model: {_no_dirs(err, path)}",
                               file_path=path.name) from None
    names = [i.name for i in session.get_inputs()]

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return list(session.run(None, dict(zip(names, inputs, strict=False))))
        except Exception as err:
            shapes = ", ".join(str(tuple(a.shape)) for a in inputs)
            raise ModelExecutionError(f"model {name!r} failed on inputs of shape {shapes}: {err}") from None

    return run


def load_runner(path: Path, fmt: str, name: str, input_names: list[str], threads: int | None = None) -> ModelFn:
    """Load ``path`` (of format ``fmt``) on CPU and return its runner.

    ``threads`` is the torch intra-op thread count of the thread that runs the
    model (default: the process's ``torch.get_num_threads()``); torch runners
    have ``runner.init_thread()`` to apply it in that thread.

    Raises
    ------
    ModelFormatError
        If the file cannot be loaded in that format.
    """
    if fmt == "onnx":
        return _onnx_runner(path, name, input_names)
    import torch

    if fmt == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # torch raises RuntimeError with the archive problem
            raise ModelFormatError(f"cannot load TorchScript archive: {_no_dirs(err, path)}",
                                   file_path=path.name) from None
        return _torch_runner(module, name, threads)
    if fmt == "checkpoint":
        from tpcflow.models.checkpoint import load_model

        try:
            module, _config = load_model(path, map_location="cpu")
        except Exception as err:  # load_model raises DataFormatError; torch its own
            raise ModelFormatError(f"cannot load tpcflow checkpoint: {_no_dirs(err, path)}",
                                   file_path=path.name) from None
        return _torch_runner(module, name, threads)
    raise ModelFormatError(f"unknown model format {fmt!r}", file_path=path.name)


def _no_dirs(err: BaseException, path: Path) -> str:
    """The error's text without the server's folders: a client sees its file's name, not where it was spooled."""
    return str(err).replace(f"{path.parent}{os.sep}", "").replace(str(path.parent), "")
