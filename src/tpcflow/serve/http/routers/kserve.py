"""KServe v2 / Open Inference Protocol routes (the protocol of Triton and tritonclient).

Source: KServe "Open Inference Protocol" REST API: health, server and model
metadata, model readiness, inference with JSON tensors and Triton's binary
tensor data extension (see :mod:`tpcflow.serve.http.tensors`).  Errors are
``{"error": message}`` bodies with a 4xx status.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from tpcflow import __version__
from tpcflow.serve.http.bodies import OFFLOAD_ELEMENTS
from tpcflow.serve.http.cache import LoadedModel
from tpcflow.serve.http.deps import State, json_response
from tpcflow.serve.http.errors import BadRequestError
from tpcflow.serve.http.inputs import check_sample_shape, is_row_preprocessing, preprocess_rows, transform_outputs
from tpcflow.serve.http.params import NAME_PATTERN
from tpcflow.serve.http.repository import check_name
from tpcflow.serve.http.schemas import (
    ERROR_RESPONSES,
    InferResponse,
    LiveResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadataResponse,
    inline_schema,
)
from tpcflow.serve.http.tensors import HEADER, InferRequest, as_bool, encode_response

__all__ = ["router"]

router = APIRouter(prefix="/v2", tags=["kserve-v2"], responses=ERROR_RESPONSES)

_NAME = Path(pattern=NAME_PATTERN, description="model name")
_VERSION = Path(pattern=r"^[1-9][0-9]{0,8}$", description="model version")
_PLATFORM = {"torchscript": "pytorch_libtorch", "checkpoint": "pytorch_libtorch", "onnx": "onnxruntime_onnx"}


@router.get("/health/live", summary="Server liveness", responses={200: {"model": LiveResponse}})
def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", summary="Server readiness", responses={200: {"model": ReadyResponse}})
def ready(state: State) -> Response:
    state.repository.names()  # the repository directory is readable
    return json_response({"ready": True})


@router.get("", summary="Server metadata", responses={200: {"model": ServerMetadataResponse}})
def server_metadata() -> Response:
    return json_response({"name": "tpcflow", "version": __version__, "extensions": ["binary_tensor_data"]})


def _metadata(state, name: str, version: int | None) -> dict:
    entry = state.repository.entry(check_name(name), version)
    p = entry.params
    sample = p.input_shape if p.input_shape is not None else [-1]
    inputs = [{"name": n, "datatype": p.datatype, "shape": [-1, *(sample if i == 0 else [-1])]}
              for i, n in enumerate(p.input_names)]
    outputs = [{"name": n, "datatype": "FP32", "shape": [-1, -1]} for n in p.output_names]
    return {"name": name, "versions": [str(v) for v in state.repository.versions(name)],
            "platform": _PLATFORM.get(p.format or "torchscript", "pytorch_libtorch"),
            "inputs": inputs, "outputs": outputs}


_META = {200: {"model": ModelMetadataResponse}}
_READY = {200: {"model": ModelReadyResponse}}
_INFERRED = {200: {"model": InferResponse}}


@router.get("/models/{name}", summary="Model metadata", responses=_META)
def model_metadata(state: State, name: str = _NAME) -> Response:
    return json_response(_metadata(state, name, None))


@router.get("/models/{name}/versions/{version}", summary="Model version metadata", responses=_META)
def model_version_metadata(state: State, name: str = _NAME, version: str = _VERSION) -> Response:
    return json_response(_metadata(state, name, int(version)))


async def _ready(state, name: str, version: int | None) -> Response:
    await state.cache.aget(check_name(name), version)  # loads it: ready means servable
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}/ready", summary="Model readiness", responses=_READY)
async def model_ready(state: State, name: str = _NAME) -> Response:
    return await _ready(state, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness", responses=_READY)
async def model_version_ready(state: State, name: str = _NAME, version: str = _VERSION) -> Response:
    return await _ready(state, name, int(version))


def _arrange_inputs(loaded: LoadedModel, request: InferRequest, arrays: list, preprocess: bool) -> list:
    p = loaded.params
    by_name = {}
    for inp, arr in zip(request.inputs, arrays, strict=True):
        if inp.name in by_name:
            raise BadRequestError(f"input {inp.name!r} given twice")
        by_name[inp.name] = (inp, arr)
    if set(by_name) != set(p.input_names):
        raise BadRequestError(f"model {p.name!r} takes inputs {p.input_names}, got {list(by_name)}")
    ordered = []
    for i, n in enumerate(p.input_names):
        inp, arr = by_name[n]
        if inp.datatype != p.datatype and not (i == 0 and preprocess):  # raw inputs: any numbers
            raise BadRequestError(f"input {n!r} must be {p.datatype}, got {inp.datatype}")
        if arr.ndim < 1 or arr.shape[0] < 1:
            raise BadRequestError(f"input {n!r} needs a batch dimension of at least 1, got shape {list(arr.shape)}")
        if i == 0 and preprocess and not is_row_preprocessing(loaded.preprocessing):  # raw images
            arr = loaded.preprocessing.apply(check_sample_shape(arr, p, what=f"input {n!r}"))
        elif i == 0 and preprocess:  # raw rows (N, columns), NaN where empty: the model's own preprocessing
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise BadRequestError(f"input {n!r} of model {p.name!r} takes raw rows: a 2-D FP32 or FP64 tensor "
                                      f"(N, {loaded.preprocessing.width}), or set parameters.preprocessed")
            arr = preprocess_rows(arr, None, p, loaded.preprocessing)
        elif i == 0:
            arr = check_sample_shape(arr, p, what=f"input {n!r}")
        ordered.append(arr)
    rows = {a.shape[0] for a in ordered}
    if len(rows) != 1:
        raise BadRequestError(f"inputs have different batch sizes {sorted(rows)}")
    return ordered


async def _infer(request: Request, state, name: str, version: int | None) -> Response:
    loaded = await state.cache.aget(check_name(name), version)  # 404 before any body error
    infer_request, arrays = await state.parser.infer(await request.body(), request.headers.get(HEADER))
    preprocess = loaded.preprocessing is not None and not as_bool(
        (infer_request.parameters or {}).get("preprocessed"))
    inputs = _arrange_inputs(loaded, infer_request, arrays, preprocess)
    outputs = transform_outputs(await loaded.batcher.submit(inputs), loaded.params)
    names = list(loaded.params.output_names)
    names += [f"output{i}" for i in range(len(names), len(outputs))]
    big = sum(o.size for o in outputs) > OFFLOAD_ELEMENTS
    payload, header_length = await state.parser.run(big, encode_response, infer_request, name, loaded.version,
                                                    names, outputs)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


def _infer_openapi() -> dict:
    return {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": inline_schema(InferRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "parameters": [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                        "schema": {"type": "integer", "minimum": 1},
                        "description": "length of the JSON header when binary tensors follow"}],
    }


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=_infer_openapi(), responses=_INFERRED)
async def infer(request: Request, state: State, name: str = _NAME) -> Response:
    """Run the latest version of ``name`` on JSON or binary tensors.

    Datatypes: BOOL, UINT8-64, INT8-64, FP16, FP32, FP64 (not BYTES).
    """
    return await _infer(request, state, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on a version",
             openapi_extra=_infer_openapi(), responses=_INFERRED)
async def infer_version(request: Request, state: State, name: str = _NAME, version: str = _VERSION) -> Response:
    """Run version ``version`` of ``name``."""
    return await _infer(request, state, name, int(version))


