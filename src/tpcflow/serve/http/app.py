"""The FastAPI application: ``create_app(settings)`` wires state, middleware, errors and routers.

Routes live in :mod:`tpcflow.serve.http.routers` (TFaaS, KServe v2, metrics);
this module only includes them.  Every error body is JSON with ``detail``
(FastAPI's field) and ``error`` (the KServe v2 field that tritonclient reads).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tpcflow import __version__
from tpcflow.errors import TpcflowError
from tpcflow.serve.http.bodies import BodyParser
from tpcflow.serve.http.cache import ModelCache
from tpcflow.serve.http.deps import ServerState
from tpcflow.serve.http.errors import status_of
from tpcflow.serve.http.metrics import LimitsMetricsMiddleware, Metrics
from tpcflow.serve.http.repository import ModelRepository
from tpcflow.serve.http.routers import kserve, metrics, proto, tfaas
from tpcflow.serve.http.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("tpcflow.serve.http")


def _error(status: int, message: str, detail: object = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message if detail is None else detail, "error": message}, status, headers=headers)


async def _tpcflow_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _error(status, str(exc), headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    detail = getattr(exc, "detail", "")
    message = detail if isinstance(detail, str) else str(detail)
    return _error(getattr(exc, "status_code", 500), message, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', '')}")
    return _error(422, "invalid request: " + "; ".join(parts), detail=errors)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal server error: {type(exc).__name__}")


def create_app(settings: Settings) -> FastAPI:
    """Build the HTTP model server for ``settings``.

    Parameters
    ----------
    settings : Settings
        Repository directory, token, limits and batching parameters.

    Returns
    -------
    FastAPI
        ASGI app; run it with uvicorn.  Its state is ``app.state.tpcflow``.
    """
    repository = ModelRepository(settings.models_dir)
    meters = Metrics()
    cache = ModelCache(
        repository,
        capacity=settings.cache_size,
        max_batch=settings.max_batch_size if settings.batching else 1,
        max_wait=settings.max_batch_delay_ms / 1000.0 if settings.batching else 0.0,
        on_batch=meters.on_batch,
        torch_threads=settings.torch_threads,
    )
    parser = BodyParser(settings.parse_processes, settings.max_request_elements)
    state = ServerState(settings=settings, repository=repository, cache=cache, metrics=meters, parser=parser,
                        default_model=settings.default_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            cache.close()
            parser.close()

    app = FastAPI(
        title="tpcflow model server",
        version=__version__,
        description="Serve PyTorch (TorchScript, tpcflow checkpoints) and ONNX models over HTTP: "
        "TFaaS-compatible routes and the KServe v2 / Open Inference Protocol.",
        lifespan=lifespan,
    )
    app.state.tpcflow = state
    app.add_middleware(
        LimitsMetricsMiddleware,
        metrics=meters,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_exception_handler(TpcflowError, _tpcflow_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(tfaas.router)
    app.include_router(proto.router)
    app.include_router(kserve.router)
    app.include_router(metrics.router)
    return app
