"""Prometheus metrics and the ASGI middleware that counts requests and enforces body limits.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so that several
apps (tests) can live in one process.  Metric names follow the Prometheus
naming guide (``_total`` counters, ``_seconds`` histograms).
"""

from __future__ import annotations

import json
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "LimitsMetricsMiddleware", "Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's metrics, in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tpcflow_http_requests", "HTTP requests by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "tpcflow_http_request_duration_seconds", "HTTP request latency [s] by route template.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_rows = Histogram(
            "tpcflow_inference_batch_rows", "Rows (samples) per model call.",
            ["model"], buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "tpcflow_inference_batch_duration_seconds", "Model call duration [s].",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.models_loaded = Gauge("tpcflow_models_loaded", "Models in the cache.", registry=self.registry)

    def on_batch(self, model: str, rows: int, seconds: float) -> None:
        """Record one model call (called from batcher threads; prometheus_client is thread-safe)."""
        self.batch_rows.labels(model).observe(rows)
        self.batch_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


async def _send_413(send: Send, message: str) -> None:
    body = json.dumps({"detail": message, "error": message}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LimitsMetricsMiddleware:
    """Pure ASGI middleware: 413 for bodies over the limit, and request metrics.

    Parameters
    ----------
    app : ASGI app
    metrics : Metrics
    max_request_bytes : int
        Limit of every body but ``POST /upload`` [bytes].
    max_upload_bytes : int
        Limit of ``POST /upload`` bodies [bytes].

    Notes
    -----
    A declared ``Content-Length`` over the limit is refused before the body is
    read; a body streamed without one is cut when it passes the limit (the
    endpoint's read raises ``HTTPException(413)``).
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_request_bytes: int, max_upload_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        upload = scope["path"] == "/upload"
        limit = self.max_upload_bytes if upload else self.max_request_bytes
        what = "upload" if upload else "request body"
        status = 500
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    status = 413
                    await _send_413(send, f"{what} too large: {declared} bytes, the limit is {limit} bytes")
                    self._observe(scope, status, t0)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"{what} too large: more than {limit} bytes, the limit is {limit} bytes")
            return message

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, status_send)
        finally:
            self._observe(scope, status, t0)

    def _observe(self, scope: Scope, status: int, t0: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "<unmatched>"
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
