"""KServe v2 inference request/response bodies, JSON and binary tensor extension.

Source: KServe "Open Inference Protocol" (v2) REST spec, and Triton's
"Binary Tensor Data Extension": the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors, in the
order of the inputs whose ``parameters.binary_data_size`` is set (row-major,
little-endian).  Outputs are sent binary when the request asks for it
(``outputs[i].parameters.binary_data`` or ``parameters.binary_data_output``).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tpcflow.serve.http.errors import BadRequestError, check_elements
from tpcflow.serve.http.params import DATATYPES

__all__ = ["InferRequest", "as_bool", "decode_request", "encode_response", "narrow", "tensor_datatype"]

HEADER = "inference-header-content-length"
_NP_TO_V2 = {np.dtype(v).str: k for k, v in DATATYPES.items()}

Parameters = dict[str, str | int | float | bool | None]


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    datatype: str = Field(json_schema_extra={"enum": sorted(DATATYPES)})
    parameters: Parameters | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    """One requested output."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Parameters | None = None


class InferRequest(BaseModel):
    """``POST /v2/models/{name}/infer`` JSON body (or the JSON header of a binary body)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class InferValidationError(BadRequestError):
    """The JSON header does not follow the inference request schema (HTTP 422)."""

    status_code = 422


def narrow(x: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """Cast numbers to ``dtype``, refusing any value the cast would change.

    Floats beyond the range of a smaller float type (they would become infinite),
    non-integers or out-of-range values for an integer type, and anything but 0
    and 1 for BOOL are errors, never silently rounded, wrapped or made infinite.

    Raises
    ------
    BadRequestError
        Naming ``what`` and the datatype.
    """
    dtype = np.dtype(dtype)
    if x.dtype.kind not in "biuf":
        raise BadRequestError(f"{what}: data are not numbers")
    if x.size and x.dtype != dtype:
        name = _NP_TO_V2.get(dtype.newbyteorder("<").str, dtype.name)
        if dtype.kind == "b":
            changed = not np.isin(x, (0, 1)).all()
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            changed = bool(x.min() < info.min or x.max() > info.max)
            if x.dtype.kind == "f":
                changed = changed or not np.array_equal(x, np.round(x))
        else:
            changed = x.dtype.kind == "f" and x.dtype.itemsize > dtype.itemsize and bool(
                np.abs(x[np.isfinite(x)]).max(initial=0) > np.finfo(dtype).max)
        if changed:
            raise BadRequestError(f"{what}: values outside {name} (not integers, or beyond its range)")
    return x.astype(dtype, copy=False)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequestError(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise BadRequestError(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def decode_request(body: bytes, header_length: str | None,
                   max_elements: int | None = None) -> tuple[InferRequest, list[np.ndarray]]:
    """Parse a v2 inference body into the request and its input arrays (shaped, typed).

    ``max_elements`` bounds the numbers of all inputs together, by their shapes,
    before any is converted.

    Raises
    ------
    BadRequestError
        On malformed JSON, unknown datatypes, data that does not fit the shape,
        or binary sizes that do not add up.
    TooManyElementsError
        If the shapes hold more than ``max_elements`` numbers (HTTP 413).
    """
    header, binary = _split_body(body, header_length)
    try:
        raw = json.loads(header)
        request = InferRequest.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequestError(f"inference request is not valid JSON: {err}") from None
    except RecursionError:  # a few KB of "[[[[..." exhaust the parser's stack: a 400, never a 500
        raise BadRequestError("inference request is nested too deeply") from None
    except ValidationError as err:
        raise InferValidationError(f"invalid inference request: {err}") from None
    if max_elements is not None:
        check_elements(sum(math.prod(inp.shape) for inp in request.inputs), max_elements, "inputs")
    arrays = []
    offset = 0
    for inp in request.inputs:
        if inp.datatype not in DATATYPES:
            raise BadRequestError(
                f"input {inp.name!r}: datatype {inp.datatype!r} is not supported; use one of {sorted(DATATYPES)}"
            )
        if any(d < 0 for d in inp.shape):
            raise BadRequestError(f"input {inp.name!r}: shape {inp.shape} has negative dimensions")
        dtype = np.dtype(DATATYPES[inp.datatype]).newbyteorder("<")
        count = math.prod(inp.shape)
        size = (inp.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequestError(f"input {inp.name!r}: binary_data_size must be a non-negative integer")
            if size != count * dtype.itemsize:
                raise BadRequestError(
                    f"input {inp.name!r}: binary_data_size {size} does not match shape {inp.shape} of "
                    f"{inp.datatype} ({count * dtype.itemsize} bytes)"
                )
            if offset + size > len(binary):
                raise BadRequestError(
                    f"input {inp.name!r}: binary data ends after {len(binary) - offset} of {size} bytes"
                )
            arr = np.frombuffer(binary[offset:offset + size], dtype=dtype).reshape(inp.shape).copy()
            offset += size
        else:
            if inp.data is None:
                raise BadRequestError(f"input {inp.name!r} has neither data nor parameters.binary_data_size")
            try:
                arr = np.asarray(inp.data)
            except (ValueError, TypeError, OverflowError, RecursionError) as err:
                raise BadRequestError(f"input {inp.name!r}: data is not {inp.datatype} numbers: {err}") from None
            arr = narrow(arr, dtype, f"input {inp.name!r}")
            if arr.size != count:
                raise BadRequestError(
                    f"input {inp.name!r}: data has {arr.size} elements but shape {inp.shape} needs {count}"
                )
            arr = arr.reshape(inp.shape)
        arrays.append(np.ascontiguousarray(arr, dtype=dtype.newbyteorder("=")))
    if offset != len(binary):
        raise BadRequestError(f"{len(binary) - offset} bytes of binary data follow the inputs unclaimed")
    return request, arrays


def tensor_datatype(dtype: np.dtype) -> str:
    """The KServe datatype of a numpy dtype (``float32`` -> ``"FP32"``).

    Raises
    ------
    BadRequestError
        For a dtype KServe v2 has no datatype for.
    """
    name = _NP_TO_V2.get(np.dtype(dtype).newbyteorder("<").str) or _NP_TO_V2.get(np.dtype(dtype).str)
    if name is None:
        raise BadRequestError(f"no KServe datatype for numpy {np.dtype(dtype)}")
    return name


def as_bool(value: object) -> bool:
    """A KServe boolean parameter: ``true`` or the string ``"true"`` (any case)."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def encode_response(request: InferRequest, model_name: str, model_version: int, names: list[str],
                    outputs: list[np.ndarray]) -> tuple[bytes, int | None]:
    """Build the response body; return it and the JSON header length if binary tensors follow.

    Raises
    ------
    BadRequestError
        If the request asks for an output the model does not have.
    """
    by_name = dict(zip(names, outputs, strict=False))
    default_binary = as_bool((request.parameters or {}).get("binary_data_output"))
    if request.outputs:
        unknown = [o.name for o in request.outputs if o.name not in by_name]
        if unknown:
            raise BadRequestError(f"unknown outputs {unknown}; model {model_name!r} has {list(by_name)}")
        selected = [(o.name, as_bool((o.parameters or {}).get("binary_data", default_binary))) for o in request.outputs]
    else:
        selected = [(n, default_binary) for n in by_name]
    tensors = []
    blobs = []
    for name, binary in selected:
        arr = np.ascontiguousarray(by_name[name])
        datatype = _NP_TO_V2.get(arr.dtype.str)
        if datatype is None:
            arr = arr.astype(np.float32)
            datatype = "FP32"
        tensor: dict[str, object] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        tensors.append(tensor)
    answer: dict[str, object] = {"model_name": model_name, "model_version": str(model_version), "outputs": tensors}
    if request.id is not None:
        answer["id"] = request.id
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
