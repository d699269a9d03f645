"""Response bodies of the HTTP routes, as pydantic models: the OpenAPI document's response schemas.

Handlers build the answers as plain dicts and send them with
:func:`tpcflow.serve.http.deps.json_response` (compact JSON, no re-validation on the hot path);
the routes declare these models in ``responses=``, and the tests check real answers against them.
Sources: KServe Open Inference Protocol (v2) for the ``/v2`` routes; TFaaS for the others.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ERROR_RESPONSES",
    "DeleteResponse",
    "ErrorResponse",
    "ImageResponse",
    "InferResponse",
    "LiveResponse",
    "ModelMetadataResponse",
    "ModelReadyResponse",
    "PredictResponse",
    "ReadyResponse",
    "ServerMetadataResponse",
    "StatusResponse",
    "UploadResponse",
    "inline_schema",
]


def inline_schema(model: type[BaseModel]) -> dict:
    """The JSON schema of ``model`` with its ``$defs`` inlined, for a route's ``openapi_extra``.

    (A ``$ref`` to ``#/$defs/...`` does not resolve inside the OpenAPI document.)
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LiveResponse(_Body):
    live: bool


class ReadyResponse(_Body):
    ready: bool


class ServerMetadataResponse(_Body):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Body):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Body):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReadyResponse(_Body):
    name: str
    ready: bool


class OutputTensor(_Body):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(_Body):
    """JSON answer of ``/v2/models/{name}/infer`` (the JSON header, when binary data follows)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class UploadResponse(_Body):
    name: str
    version: int
    format: str
    params: dict[str, Any]


class DeleteResponse(_Body):
    name: str
    deleted_versions: list[int]


class PredictResponse(_Body):
    """``/json``: the first output per row, and every output by name when there are several."""

    model: str
    version: int
    predictions: list[Any] | float | int
    outputs: dict[str, Any] | None = None


class LabelProbability(_Body):
    label: str
    probability: float


class ImageResponse(_Body):
    model: str
    version: int
    filename: str | None
    labels: list[LabelProbability]


class StatusResponse(_Body):
    status: str
    server: str
    version: str
    uptime_s: float
    models: int
    loaded: list[dict[str, Any]]
    formats: list[str]
    batching: dict[str, Any]
    limits: dict[str, Any]
    uploads_enabled: bool
    numpy: str


class ErrorResponse(_Body):
    """Every error answer: ``error`` the message; ``detail`` the same, or pydantic's error list for a 422."""

    detail: Any
    error: str


#: the error answers every route may give, declared once for the routers (``APIRouter(responses=...)``)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "bad input: wrong shapes, keys, files or values (the message says which)"),
        (401, "upload or delete without the right API token"),
        (403, "upload or delete on a server without an API token"),
        (404, "unknown model, version or route"),
        (405, "method not allowed on this route"),
        (413, "request body over the size limit"),
        (415, "an image that is not PNG or JPEG"),
        (422, "a body that is not valid JSON or fails the request schema"),
    )
}
