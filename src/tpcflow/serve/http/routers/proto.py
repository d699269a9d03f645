"""TFaaS's protobuf routes: ``POST /proto`` and ``/predict/proto``.

Source: TFaaS ``PredictProtobufHandler`` (vkuznet/TFaaS ``src/Go/handlers.go``): the body is a
serialised ``tfaaspb.Row`` (feature names, values and the model), the answer a serialised
``tfaaspb.Predictions``, one ``Class`` per model output in the model's order (the model's
label, and its output after the model's ``output_transform``).  The messages are in
``tfaas.proto`` beside :mod:`tpcflow.serve.http.tfaas_pb2`.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from tpcflow.serve.http.deps import State
from tpcflow.serve.http.errors import BadRequestError, check_elements
from tpcflow.serve.http.inputs import model_input, transform_outputs
from tpcflow.serve.http.repository import check_name
from tpcflow.serve.http.schemas import ERROR_RESPONSES

__all__ = ["MEDIA_TYPE", "router"]

router = APIRouter(tags=["tfaas"], responses=ERROR_RESPONSES)

#: media type of the request and answer bodies
MEDIA_TYPE = "application/x-protobuf"

_DOC = {
    # any content type is read; declared as octet-stream, which OpenAPI tools can send
    "requestBody": {"required": True, "description": "a serialised tfaaspb.Row",
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    "responses": {"200": {"description": "a serialised tfaaspb.Predictions",
                          "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}},
}


async def _predict_proto(request: Request, state: State) -> Response:
    from google.protobuf.message import DecodeError

    from tpcflow.serve.http import tfaas_pb2

    try:
        row = tfaas_pb2.Row.FromString(await request.body())
    except DecodeError as err:
        raise BadRequestError(f"the body is not a tfaaspb.Row protobuf message: {err}") from None
    check_elements(len(row.value), state.settings.max_request_elements, "row")
    if not row.value:
        raise BadRequestError("the Row has no values")
    keys = list(row.key) or None
    loaded = await state.cache.aget(check_name(state.model_name(row.model or None)))
    x = np.asarray(row.value, dtype=np.float64)[None, :]
    outputs = transform_outputs(await loaded.batcher.submit([model_input(loaded, x, keys)]), loaded.params)
    scores = np.asarray(outputs[0][0], dtype=np.float64).reshape(-1)
    labels = list(loaded.labels or [])
    answer = tfaas_pb2.Predictions(prediction=[
        tfaas_pb2.Class(label=labels[i] if i < len(labels) else "", probability=float(p))
        for i, p in enumerate(scores)])
    return Response(answer.SerializeToString(), media_type=MEDIA_TYPE)


@router.post("/proto", summary="Predict from a protobuf Row (TFaaS)", openapi_extra=_DOC)
async def predict_proto(request: Request, state: State) -> Response:
    """One ``tfaaspb.Row`` in, one ``tfaaspb.Predictions`` out (see the module docstring)."""
    return await _predict_proto(request, state)


@router.post("/predict/proto", summary="Predict from a protobuf Row (TFaaS's second route)", openapi_extra=_DOC)
async def predict_proto_alias(request: Request, state: State) -> Response:
    """The same as ``POST /proto``."""
    return await _predict_proto(request, state)
