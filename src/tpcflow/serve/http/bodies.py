"""Parse inference request bodies and encode their answers, the large ones in helper processes.

JSON parsing, validation and encoding hold the GIL for their whole run (about
0.4 s for a million numbers), so a thread does not keep the server answering:
while one large body is parsed, even ``/v2/health/live`` waits.  Bodies above
:data:`OFFLOAD_BYTES`, and answers above :data:`OFFLOAD_ELEMENTS` numbers, are
therefore handled in a small pool of helper processes (``spawn``; they import
numpy and pydantic, never torch) and pass as arrays and bytes, which cost one
copy.  Each request is also bounded in numbers (``max_request_elements``),
beside the byte limit of the middleware.

The functions run in the helper processes are module-level, take bytes or
arrays and return arrays or bytes, or raise picklable
:class:`~tpcflow.serve.http.errors.BadRequestError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tpcflow.serve.http.errors import ServerBusyError
from tpcflow.serve.http.inputs import values_to_rows
from tpcflow.serve.http.params import NAME_PATTERN
from tpcflow.serve.http.tensors import InferRequest, decode_request

__all__ = [
    "OFFLOAD_BYTES",
    "OFFLOAD_ELEMENTS",
    "BodyParser",
    "ParsedPredict",
    "PredictRequest",
    "parse_infer",
    "parse_predict",
    "predictions_body",
]

log = logging.getLogger("tpcflow.serve.http")

#: bodies above this size [bytes] are parsed in a helper process
OFFLOAD_BYTES = 1 << 16
#: answers of more numbers than this are encoded in a helper process
OFFLOAD_ELEMENTS = 1 << 14
#: an error's ``input`` longer than this (a list, a mapping, a string) is shown by its type and length
_MAX_SHOWN_INPUT = 64


class PredictRequest(BaseModel):
    """Body of ``POST /json`` (TFaaS's format, plus ``keys`` and batches of rows)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, pattern=NAME_PATTERN,
                              description="model name (default: the server's default model, or its only one)")
    keys: list[str] | None = Field(default=None, description="feature names of the values, in their order")
    # fail_fast: the work a hostile body causes is bounded by its first bad element (issue 16)
    values: Annotated[list[float | None], Field(fail_fast=True)] | Annotated[
        list[Annotated[list[float | None], Field(fail_fast=True)]], Field(fail_fast=True)] = Field(
        description="one row [v, ...] or rows [[v, ...], ...]; null marks an empty slot of a raw row")
    version: int | None = Field(default=None, ge=1, description="model version (default: latest)")
    preprocessed: bool = Field(default=False, description="the rows are already the network's input: "
                               "skip the model's preprocessing")


@dataclass(frozen=True)
class ParsedPredict:
    """A validated ``/json`` body: ``x`` is ``(rows, values)`` float64 (NaN for null); ``single`` if one row was sent."""

    model: str | None
    keys: list[str] | None
    version: int | None
    x: np.ndarray
    single: bool
    preprocessed: bool = False


def _shown(value: object) -> object:
    if isinstance(value, (list, dict, str, bytes)) and len(value) > _MAX_SHOWN_INPUT:
        return f"<{type(value).__name__} of length {len(value)}>"
    return value


def _body_errors(err: ValidationError) -> list[dict]:
    errors = err.errors(include_url=False, include_context=False)
    for e in errors:
        e["loc"] = ("body", *e["loc"])
        if "input" in e:  # a mapping of a million keys where a list belongs is not echoed back
            e["input"] = _shown(e["input"])
    return errors


def parse_predict(raw: bytes, max_elements: int) -> ParsedPredict | list[dict]:
    """Parse and validate a ``/json`` body; the validation errors (FastAPI's form) if it is invalid.

    ``values`` validation stops at its first bad element (pydantic's ``fail_fast``),
    so a body of a million strings is one error, not two million.

    Raises
    ------
    BadRequestError
        On ragged or empty rows, NaN or infinity.
    TooManyElementsError
        If the body holds more than ``max_elements`` values (HTTP 413).
    """
    try:
        body = PredictRequest.model_validate_json(raw)
    except ValidationError as err:
        return _body_errors(err)
    x, single = values_to_rows(body.values, max_elements)
    return ParsedPredict(body.model, body.keys, body.version, x, single, body.preprocessed)


def parse_infer(body: bytes, header_length: str | None, max_elements: int) -> tuple[InferRequest, list[np.ndarray]]:
    """:func:`tpcflow.serve.http.tensors.decode_request` (see there), returning no JSON ``data`` lists."""
    request, arrays = decode_request(body, header_length, max_elements)
    for inp in request.inputs:
        inp.data = None  # converted; passing a million floats back would cost more than parsing them
    return request, arrays


def predictions_body(model: str, version: int, output_names: list[str], outputs: list[np.ndarray],
                     single: bool) -> bytes:
    """The ``POST /json`` answer: ``{"model", "version", "predictions"[, "outputs"]}`` as compact JSON.

    ``predictions`` is the first output (its first row if one row was sent);
    ``outputs`` maps every output's name to its values when the model has several.
    """
    first = outputs[0][0] if single else outputs[0]
    answer: dict = {"model": model, "version": version, "predictions": first.tolist()}
    if len(outputs) > 1:
        answer["outputs"] = {
            (output_names[i] if i < len(output_names) else f"output{i}"): (o[0] if single else o).tolist()
            for i, o in enumerate(outputs)
        }
    return json.dumps(answer, separators=(",", ":")).encode()


def _warm() -> None:
    """Run in a new helper process: import what parsing needs before the first large body."""


def _init_helper() -> None:
    """Ctrl-C reaches the whole process group: the server stops its helpers itself, after the last request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class BodyParser:
    """Run :func:`parse_predict` and :func:`parse_infer`, in helper processes for large bodies.

    Parameters
    ----------
    processes : int
        Helper processes; 0 parses every body in a thread of the server process instead.
    max_elements : int
        Most numbers one request may carry (HTTP 413 above).
    """

    def __init__(self, processes: int, max_elements: int):
        self.processes = processes
        self.max_elements = max_elements
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_helper)
            return self._pool

    def warm(self) -> None:
        """Start the helper processes now, instead of at the first large body (about 1 s)."""
        if self.processes:
            for future in [self._executor().submit(_warm) for _ in range(self.processes)]:
                future.result()

    async def run(self, big: bool, fn, *args):
        """``fn(*args)``: here if not ``big``, else in a helper process (or a thread without processes).

        Raises
        ------
        ServerBusyError
            If the helper process died meanwhile (HTTP 503); new ones are started for the next request.
        """
        if not big:
            return fn(*args)
        if not self.processes:
            return await asyncio.to_thread(fn, *args)
        pool = self._executor()
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            log.error("a request parser process died (killed, or out of memory); starting new ones")
            raise ServerBusyError("the request parser process died while parsing this body; retry") from None

    async def predict(self, raw: bytes) -> ParsedPredict:
        """Parse a ``/json`` body.

        Raises
        ------
        RequestValidationError
            With the body's errors (HTTP 422).
        BadRequestError, TooManyElementsError, ServerBusyError
            See :func:`parse_predict`; 503 if a helper process died.
        """
        parsed = await self.run(len(raw) > OFFLOAD_BYTES, parse_predict, raw, self.max_elements)
        if isinstance(parsed, list):
            raise RequestValidationError(parsed)
        return parsed

    async def infer(self, body: bytes, header_length: str | None) -> tuple[InferRequest, list[np.ndarray]]:
        """Parse a KServe v2 inference body (:func:`parse_infer`)."""
        return await self.run(len(body) > OFFLOAD_BYTES, parse_infer, body, header_length, self.max_elements)

    def close(self) -> None:
        """Stop the helper processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

