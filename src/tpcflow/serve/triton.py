"""Triton model configuration (``config.pbtxt``): written for an exported cosmic tagger, parsed by Triton's schema.

A Triton model repository holds one folder per model: ``<root>/<name>/config.pbtxt`` and the
versions ``<root>/<name>/<n>/model.pt`` (TorchScript, ``platform: "pytorch_libtorch"``).  tpcflow's
own HTTP model repository (:mod:`tpcflow.serve.http.repository`) uses the same folders, with
``params.json`` beside each version's model, so one exported folder serves from both servers.

The configuration is parsed with Triton's own protobuf schema, ``inference.ModelConfig`` of
``model_config.proto``, as generated in the ``tritonclient`` package
(``tritonclient/grpc/model_config_pb2.py``), and protobuf's text-format parser.  The module is
loaded from its file, so that ``tritonclient[http]`` suffices (its ``grpc`` package needs grpcio).

Source: Triton Inference Server, docs/user_guide/model_configuration.md and
docs/user_guide/model_repository.md; PyTorch backend naming ``INPUT__0`` / ``OUTPUT__0``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tpcflow.errors import ConfigError, DataFormatError

__all__ = ["INPUT", "OUTPUT", "cosmic_tagger_config", "model_config_schema", "parse_model_config"]

INPUT, OUTPUT = "INPUT__0", "OUTPUT__0"


def cosmic_tagger_config(name: str, image_shape: tuple[int, int], *, n_planes: int = 3, n_classes: int = 3,
                         max_batch_size: int = 8, queue_delay_us: int = 2000, data: dict | None = None) -> str:
    """``config.pbtxt`` of an exported cosmic tagger (TorchScript, dynamic batching).

    Input ``INPUT__0`` FP32 ``[-1, n_planes, H, W]`` (charge [ADC], pooled to the training images);
    output ``OUTPUT__0`` FP32 ``[-1, n_classes, n_planes, H, W]`` (logits).  ``data`` (the
    checkpoint's training resolution) goes in ``parameters { key: "tpcflow_data" }`` as JSON.
    """
    h, w = (int(v) for v in image_shape)
    lines = [
        f'name: "{name}"',
        'platform: "pytorch_libtorch"',
        f"max_batch_size: {int(max_batch_size)}",
        f'input [ {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {n_planes}, {h}, {w} ] }} ]',
        f'output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ {n_classes}, {n_planes}, {h}, {w} ] }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {int(queue_delay_us)} }}",
        "instance_group [ { kind: KIND_AUTO count: 1 } ]",
    ]
    if data is not None:
        lines.append(f'parameters {{ key: "tpcflow_data" value {{ string_value: {json.dumps(json.dumps(data))} }} }}')
    return "\n".join(lines) + "\n"


def model_config_schema():
    """Triton's ``ModelConfig`` message class (from ``tritonclient``'s generated ``model_config_pb2``).

    Raises
    ------
    ConfigError
        If ``tritonclient`` is not installed.
    """
    spec = importlib.util.find_spec("tritonclient")
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ConfigError("checking a Triton config.pbtxt needs Triton's schema: pip install 'tritonclient[http]'")
    module_spec = importlib.util.spec_from_file_location("tpcflow_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig


def parse_model_config(text: str, where: str | Path = "config.pbtxt"):
    """Parse ``config.pbtxt`` text by Triton's schema; return the ``ModelConfig`` message.

    Raises
    ------
    DataFormatError
        Text that is not a valid ``ModelConfig`` (unknown field, wrong type), naming the file and line.
    """
    from google.protobuf import text_format

    message = model_config_schema()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise DataFormatError(f"not a Triton model configuration: {err}", file_path=str(where)) from None
    return message
