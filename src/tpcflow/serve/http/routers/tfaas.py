"""TFaaS-compatible routes: upload, list, delete, JSON and image predictions, status.

Source: TFaaS (vkuznet/TFaaS) ``/upload``, ``/models``, ``/delete``, ``/json``,
``/image``, ``/status``; here ``/json`` also takes batches of rows and uses the
``keys`` to order the features.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.datastructures import UploadFile

from tpcflow import __version__
from tpcflow.serve.http.bodies import OFFLOAD_ELEMENTS, PredictRequest, predictions_body
from tpcflow.serve.http.bundles import decode_base64_model, read_bundle
from tpcflow.serve.http.deps import State, json_response, require_token
from tpcflow.serve.http.errors import BadRequestError, ModelFormatError
from tpcflow.serve.http.inputs import (
    decode_image,
    is_row_preprocessing,
    label_probabilities,
    model_input,
    transform_outputs,
)
from tpcflow.serve.http.loading import onnx_available
from tpcflow.serve.http.params import NAME_PATTERN
from tpcflow.serve.http.repository import check_name, parse_labels
from tpcflow.serve.http.schemas import (
    ERROR_RESPONSES,
    DeleteResponse,
    ImageResponse,
    PredictResponse,
    StatusResponse,
    UploadResponse,
    inline_schema,
)

__all__ = ["router"]

router = APIRouter(tags=["tfaas"], responses=ERROR_RESPONSES)

_FORM_LIMITS = {"max_files": 3, "max_fields": 4, "max_part_size": 1024 * 1024}


def _multipart_body(properties: dict, required: list[str]) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


_BINARY = {"type": "string", "format": "binary"}


async def _read_part(part: object, what: str) -> bytes:
    if isinstance(part, UploadFile):
        return await part.read()
    if isinstance(part, str):
        return part.encode()
    raise BadRequestError(f"missing multipart field {what!r}")


@router.post(
    "/upload",
    status_code=201,
    dependencies=[Depends(require_token)],
    summary="Upload a model (new version)",
    responses={201: {"model": UploadResponse}},
    openapi_extra=_multipart_body(
        {"name": {"type": "string", "pattern": NAME_PATTERN}, "params": {"type": "string"},
         "model": _BINARY, "labels": {"type": "string"}},
        ["name", "params", "model"],
    ),
)
async def upload(request: Request, state: State) -> Response:
    """Store a TorchScript, tpcflow checkpoint or ONNX model as a new version of ``name``.

    Multipart fields: ``name``; ``params`` (params.json, a file or a string);
    ``model`` (the model file, base64-encoded with ``Content-Encoding: base64``); ``labels``
    (optional labels.txt).  Any other body is a TFaaS model bundle, a (gzip) tar of the model
    folder (:mod:`tpcflow.serve.http.bundles`).  Needs the API token.
    """
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await _upload_bundle(request, state)
    base64 = request.headers.get("content-encoding", "").lower() == "base64"
    form = await request.form(**_FORM_LIMITS)
    try:
        name = form.get("name")
        if not isinstance(name, str):
            raise BadRequestError("missing multipart field 'name' (the model name)")
        check_name(name)
        try:
            params = json.loads(await _read_part(form.get("params"), "params"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFormatError(f"params is not valid JSON: {err}", file_path="params.json") from None
        if not isinstance(params, dict):
            raise ModelFormatError("params must be a JSON object", file_path="params.json")
        model = form.get("model")
        if not isinstance(model, UploadFile):
            raise BadRequestError("missing multipart file 'model' (the model file)")
        labels_part = form.get("labels")
        labels = parse_labels(await _read_part(labels_part, "labels")) if labels_part is not None else None
        await model.seek(0)
        if base64:
            data = decode_base64_model(await model.read())
            entry = await _add_model(state, name, params, model.filename, labels, lambda out: out.write(data))
        else:
            entry = await _add_model(state, name, params, model.filename, labels,
                                     lambda out: shutil.copyfileobj(model.file, out))
    finally:
        await form.close()
    return _uploaded(entry)


def _uploaded(entry) -> Response:
    return json_response({"name": entry.name, "version": entry.version, "format": entry.params.format,
                          "params": entry.params.model_dump(mode="json", exclude_none=True)}, 201)


async def _add_model(state: State, name: str, params: dict, filename: str | None, labels, write):
    """Add a model version from a scratch file that ``write(file)`` fills (in a worker thread); the file is removed."""
    fd, tmp = tempfile.mkstemp(prefix="model-", dir=state.repository.scratch_dir())
    tmp_path = Path(tmp)

    def add():
        with open(fd, "wb") as out:
            write(out)
        return state.repository.add(name, params, tmp_path, filename=filename, labels=labels)

    try:
        return await anyio.to_thread.run_sync(add)
    finally:
        tmp_path.unlink(missing_ok=True)


async def _upload_bundle(request: Request, state: State) -> Response:
    bundle = await anyio.to_thread.run_sync(read_bundle, await request.body(), state.settings.max_upload_bytes)
    labels = parse_labels(bundle.labels) if bundle.labels is not None else None
    entry = await _add_model(state, check_name(bundle.name), bundle.params, bundle.model_name, labels,
                             lambda out: out.write(bundle.model))
    return _uploaded(entry)


@router.get("/models", summary="List the models", responses={200: {"model": list[dict[str, Any]]}})
def models(state: State) -> Response:
    """Params of the latest version of every model, each with its ``versions``."""
    return json_response(state.repository.describe())


@router.delete("/delete/{model:path}", dependencies=[Depends(require_token)], summary="Delete a model",
               responses={200: {"model": DeleteResponse}})
async def delete(state: State, model: str,
                 version: int | None = Query(default=None, ge=1, description="only this version")) -> Response:
    """Delete every version of ``model`` (or one).  Needs the API token."""
    check_name(model)
    removed = await anyio.to_thread.run_sync(state.repository.delete, model, version)
    state.cache.evict(model, version)
    return json_response({"name": model, "deleted_versions": removed})


_PREDICT_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": inline_schema(PredictRequest)}}}}


@router.post("/json", summary="Predict from JSON rows", openapi_extra=_PREDICT_DOC,
             responses={200: {"model": PredictResponse}})
async def predict_json(request: Request, state: State) -> Response:
    """Run ``model`` on one row or a batch of rows; returns ``predictions`` (one per row).

    The body is validated with :class:`~tpcflow.serve.http.bodies.PredictRequest` directly
    (pydantic-core's JSON parser), large bodies in a helper process (:mod:`.bodies`).
    """
    body = await state.parser.predict(await request.body())
    loaded = await state.cache.aget(state.model_name(body.model), body.version)
    x = model_input(loaded, body.x, body.keys, body.preprocessed)
    single = body.single
    outputs = transform_outputs(await loaded.batcher.submit([x]), loaded.params)
    big = sum(o.size for o in outputs) > OFFLOAD_ELEMENTS
    payload = await state.parser.run(big, predictions_body, loaded.name, loaded.version,
                                     list(loaded.params.output_names), outputs, single)
    return Response(payload, media_type="application/json")


@router.post("/predict/json", summary="Predict from JSON rows (TFaaS's second route)", openapi_extra=_PREDICT_DOC,
             responses={200: {"model": PredictResponse}})
async def predict_json_alias(request: Request, state: State) -> Response:
    """The same as ``POST /json``."""
    return await predict_json(request, state)


@router.post(
    "/image",
    summary="Classify a PNG or JPEG image",
    openapi_extra=_multipart_body(
        {"image": _BINARY, "model": {"type": "string", "pattern": NAME_PATTERN}, "version": {"type": "integer"}},
        ["image"],
    ),
    responses={200: {"model": ImageResponse}},
)
async def predict_image(request: Request, state: State) -> Response:
    """Multipart ``image`` (PNG/JPEG) and ``model`` (default: the server's default or only model);
    returns labels with probabilities, most probable first."""
    form = await request.form(**_FORM_LIMITS)
    try:
        name = form.get("model")
        name = check_name(state.model_name(name if isinstance(name, str) and name else None))
        version_field = form.get("version")
        version = None
        if isinstance(version_field, str) and version_field:
            if not version_field.isdigit() or int(version_field) < 1:
                raise BadRequestError(f"version must be a positive integer, got {version_field!r}")
            version = int(version_field)
        image = form.get("image") or form.get("file")
        if not isinstance(image, UploadFile):
            raise BadRequestError("missing multipart file 'image' (a PNG or JPEG)")
        data = await image.read()
        filename = image.filename
    finally:
        await form.close()
    loaded = await state.cache.aget(name, version)
    x = await anyio.to_thread.run_sync(decode_image, data, loaded.params, state.settings.max_image_pixels)
    if loaded.preprocessing is not None:  # pixels / 255 are the raw image the model was trained on
        if is_row_preprocessing(loaded.preprocessing):
            raise BadRequestError(f"model {loaded.name!r} takes rows of a tree (POST /json), not images")
        x = loaded.preprocessing.apply(x)
    outputs = await loaded.batcher.submit([x])
    return json_response({"model": loaded.name, "version": loaded.version, "filename": filename,
                  "labels": label_probabilities(outputs[0][0], loaded.params, loaded.labels)})


@router.post("/predict/image", summary="Classify a PNG or JPEG image (TFaaS's second route)",
             openapi_extra=_multipart_body(
                 {"image": _BINARY, "model": {"type": "string", "pattern": NAME_PATTERN}, "version": {"type": "integer"}},
                 ["image"]),
             responses={200: {"model": ImageResponse}})
async def predict_image_alias(request: Request, state: State) -> Response:
    """The same as ``POST /image``."""
    return await predict_image(request, state)


@router.get("/params", summary="Params of a model (TFaaS)", responses={200: {"model": dict[str, Any]}})
def get_params(state: State, model: str | None = Query(default=None, pattern=NAME_PATTERN,
                                                       description="model (default: the default model)"),
               version: int | None = Query(default=None, ge=1, description="version (default: latest)")) -> Response:
    """The ``params.json`` of ``model`` as the server holds it (with its ``version`` and ``format``)."""
    entry = state.repository.entry(check_name(state.model_name(model)), version)
    return json_response(entry.params.model_dump(mode="json", exclude_none=True))


@router.post("/params", dependencies=[Depends(require_token)], summary="Choose the default model (TFaaS)",
             responses={200: {"model": dict[str, Any]}})
async def set_params(request: Request, state: State) -> Response:
    """Make the model named by the body's ``name`` the one used by requests naming no model.

    TFaaS's ``POST /params`` sets the server's current model from a params.json body; the
    model must already be uploaded.  Needs the API token.
    """
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequestError(f"params is not valid JSON: {err}") from None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise BadRequestError('POST /params needs a JSON object with the model\'s "name"')
    state.repository.entry(check_name(name))  # 404 for an unknown model
    state.default_model = name
    return json_response({"default_model": name})


@router.get("/status", summary="Server status", responses={200: {"model": StatusResponse}})
def status(state: State) -> Response:
    """Server version, uptime, number of models, loaded models with batch counters, settings."""
    s = state.settings
    return json_response({
        "status": "ok",
        "server": "tpcflow",
        "version": __version__,
        "uptime_s": round(time.time() - state.started_at, 3),
        "models": len(state.repository.names()),
        "loaded": state.cache.info(),
        "formats": ["torchscript", "checkpoint"] + (["onnx"] if onnx_available() else []),
        "batching": {"enabled": s.batching, "max_batch_size": s.max_batch_size,
                     "max_batch_delay_ms": s.max_batch_delay_ms},
        "limits": {"max_upload_bytes": s.max_upload_bytes, "max_request_bytes": s.max_request_bytes,
                   "max_request_elements": s.max_request_elements, "max_image_pixels": s.max_image_pixels},
        "uploads_enabled": s.api_token is not None,
        "numpy": np.__version__,
    })
