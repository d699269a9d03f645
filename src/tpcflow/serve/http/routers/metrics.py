"""``GET /metrics``: Prometheus text exposition of the server's registry."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tpcflow.serve.http.deps import State
from tpcflow.serve.http.metrics import CONTENT_TYPE_LATEST
from tpcflow.serve.http.schemas import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(tags=["metrics"], responses=ERROR_RESPONSES)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def prometheus_metrics(state: State) -> Response:
    """Request counts and latencies per route, model batch sizes and durations."""
    state.metrics.models_loaded.set(len(state.cache))
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
