"""The ``params.json`` of a served model, validated with pydantic.

Source: TFaaS ``TFParams`` (vkuznet/TFaaS ``src/Go/tfaas.go``: ``name``, ``model``,
``labels``, ``options``, ``inputNode``, ``outputNode``, ``description``,
``timestamp``) and its image models (``img_channels``, ``img_width``,
``img_height``).  TFaaS names are accepted as aliases (``inputNode`` ->
``input_names``); tpcflow adds what a PyTorch model and the KServe v2 metadata
need (``input_shape``, ``datatype``, ``keys``, ``format``, ``probabilities``).
Unknown keys are rejected, so that a typo does not pass silently.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DATATYPES", "NAME_PATTERN", "ModelParams", "valid_name"]

#: model names: a letter or digit, then letters, digits, ``_``, ``-`` or ``.``; no ``..``
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

#: KServe v2 datatype -> numpy dtype string (KServe v2 / Open Inference Protocol, "Tensor Data Types")
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


def valid_name(name: object) -> bool:
    """Whether ``name`` is a safe model name (cannot escape the repository directory)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and ".." not in name


class ModelParams(BaseModel):
    """Description of one served model (one ``params.json``).

    Attributes
    ----------
    name : str
        Model name (:data:`NAME_PATTERN`); the upload's ``name`` field wins over it.
    description : str
        Free text.
    input_names, output_names : list of str
        Tensor names (TFaaS ``inputNode`` / ``outputNode``); defaults ``["input0"]``,
        ``["output0"]``.  The model is called as ``model(*inputs)`` in this order.
    input_shape : list of int or None
        Per-sample shape of the (first) input, without the batch dimension;
        ``-1`` means any size.  Requests with another shape get HTTP 400.
    datatype : str
        KServe datatype of every input (``"FP32"``...); JSON values are cast to it.
    keys : list of str or None
        Names of the input features in the order the model expects them.
        ``POST /json`` matches the request's ``keys`` against them and reorders
        the values accordingly.
    labels : str, list of str or None
        TFaaS: the labels file name; or the labels themselves.
    img_channels, img_width, img_height : int or None
        Image models: ``POST /image`` decodes to ``img_channels`` (1 grey, 3 RGB,
        4 RGBA) and requires this size [pixels]; pixel values scaled to [0, 1],
        layout ``[1, C, H, W]``.
    probabilities : {"softmax", "sigmoid", "none"}
        How ``POST /image`` turns the output into probabilities.
    preprocessing : dict or None
        What turns raw inputs into the network's input: raw rows (physics units; NaN or
        ``null`` where there is no value) for ``tpcflow-root-preprocessing``
        (:mod:`tpcflow.loader.root_preprocess`, written by ``root-train``; ``keys`` are then
        the raw columns), raw images for ``tpcflow-image-preprocessing``
        (:mod:`tpcflow.loader.image_preprocess`).  ``/json``, ``/proto``, ``/image`` and KServe
        ``infer`` apply it, unless the request says ``preprocessed``.
    output_transform : {"sigmoid", "softmax", "none"} or None
        Applied to the first output by ``/json`` and KServe ``infer``, so that they answer
        probabilities; None (the default) answers the network's raw outputs.
    format : {"torchscript", "checkpoint", "onnx"} or None
        Set by the server at upload from the file's content.
    version : int or None
        Set by the server: the repository version.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    model: str | None = None
    labels: str | list[str] | None = None
    input_names: list[str] = Field(
        default_factory=lambda: ["input0"],
        min_length=1,
        validation_alias=AliasChoices("input_names", "inputNode", "inputs"),
    )
    output_names: list[str] = Field(
        default_factory=lambda: ["output0"],
        min_length=1,
        validation_alias=AliasChoices("output_names", "outputNode", "outputs"),
    )
    input_shape: list[int] | None = None
    datatype: Literal["FP32", "FP64", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL"] = "FP32"
    keys: list[str] | None = None
    img_channels: Literal[1, 3, 4] | None = None
    img_width: int | None = Field(default=None, gt=0, le=16384)
    img_height: int | None = Field(default=None, gt=0, le=16384)
    probabilities: Literal["softmax", "sigmoid", "none"] = "softmax"
    preprocessing: dict | None = None
    output_transform: Literal["sigmoid", "softmax", "none"] | None = None
    options: list[str] | dict[str, str | int | float | bool] = Field(default_factory=list)
    timestamp: str | None = None
    format: Literal["torchscript", "checkpoint", "onnx"] | None = None
    version: int | None = Field(default=None, ge=1)

    @field_validator("input_names", "output_names", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("input_shape")
    @classmethod
    def _shape_dims(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(d == 0 or d < -1 for d in value):
            raise ValueError(f"input_shape dimensions must be > 0 or -1 (any), but got {value}")
        return value

    @field_validator("preprocessing")
    @classmethod
    def _preprocessing(cls, value: dict | None) -> dict | None:
        if value is not None:
            from tpcflow.loader.root_preprocess import load_preprocessing

            load_preprocessing(value)  # DataFormatError is a ValueError: a validation error
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelParams:
        if self.raw_columns is not None:
            columns = self.raw_columns
            if self.keys is not None and self.keys != columns:
                raise ValueError(f"keys must be the preprocessing's columns {columns[:4]}..., in their order")
            width = len(columns) * (2 if self.preprocessing.get("use_mask") else 1)
            if self.input_shape is not None and self.input_shape != [width]:
                raise ValueError(f"input_shape {self.input_shape} does not match the preprocessing ([{width}])")
        elif self.keys is not None:
            if len(set(self.keys)) != len(self.keys):
                raise ValueError(f"keys must be unique, but got {self.keys}")
            if self.input_shape is not None and self.input_shape[-1:] not in ([len(self.keys)], [-1]):
                raise ValueError(
                    f"keys has {len(self.keys)} names but input_shape {self.input_shape} "
                    f"has {self.input_shape[-1]} features"
                )
        if len(set(self.input_names)) != len(self.input_names):
            raise ValueError(f"input_names must be unique, but got {self.input_names}")
        if len(set(self.output_names)) != len(self.output_names):
            raise ValueError(f"output_names must be unique, but got {self.output_names}")
        return self

    @property
    def raw_columns(self) -> list[str] | None:
        """Columns of the raw rows the preprocessing takes (None without preprocessing)."""
        from tpcflow.loader.root_preprocess import Preprocessing, load_preprocessing

        prep = load_preprocessing(self.preprocessing) if self.preprocessing is not None else None
        return prep.columns if isinstance(prep, Preprocessing) else None

    @property
    def label_list(self) -> list[str] | None:
        """The labels when given inline (a list), else None."""
        return self.labels if isinstance(self.labels, list) else None
