"""Errors of the HTTP model server, each carrying the HTTP status it maps to.

Every class subclasses a :mod:`tpcflow.errors` type (and so a builtin), so that
library callers (the repository, the cache, the batcher) can raise and catch
them without knowing about HTTP; :mod:`tpcflow.serve.http.app` maps them to
responses in one exception handler.
"""

from __future__ import annotations

from collections.abc import Iterable

from tpcflow.errors import DataFormatError, ProtocolError, ServiceError, TpcflowError, closest

__all__ = [
    "AuthError",
    "BadRequestError",
    "ModelExecutionError",
    "ModelFormatError",
    "PayloadTooLargeError",
    "ServerBusyError",
    "TooManyElementsError",
    "UnknownModelError",
    "check_elements",
    "status_of",
]


class BadRequestError(ProtocolError):
    """The request body or a parameter is malformed (HTTP 400)."""

    status_code = 400


class PayloadTooLargeError(ProtocolError):
    """The request body exceeds the configured limit (HTTP 413)."""

    status_code = 413

    def __init__(self, size: int | None, limit: int, what: str = "request body"):
        self.size = size
        self.limit = limit
        self.what = what
        super().__init__(str(self))

    def __str__(self) -> str:
        got = f"{self.size} bytes" if self.size is not None else "more bytes"
        return f"{self.what} too large: {got}, the limit is {self.limit} bytes"


class TooManyElementsError(ProtocolError):
    """The request carries more numbers than ``max_request_elements`` (HTTP 413)."""

    status_code = 413


def check_elements(count: int, limit: int, what: str = "request") -> None:
    """Bound the work of one request by its count of numbers, before they are converted.

    Raises
    ------
    TooManyElementsError
        If ``count`` exceeds ``limit``.
    """
    if count > limit:
        raise TooManyElementsError(f"{what} holds {count} numbers, the limit is {limit} (max_request_elements)")


class ServerBusyError(ServiceError):
    """The server could not finish the request for a reason of its own; retry (HTTP 503)."""

    status_code = 503


class AuthError(TpcflowError, PermissionError):
    """The API token is missing or wrong (401), or the server has none (403)."""

    def __init__(self, message: str, status_code: int = 401):
        self.status_code = status_code
        super().__init__(message)


class UnknownModelError(TpcflowError, KeyError):
    """No model (or model version) of that name is in the repository (HTTP 404)."""

    status_code = 404

    def __init__(self, name: str, *, version: int | None = None, available: Iterable[str] = ()):
        self.name = name
        self.version = version
        self.available = sorted(set(available))
        super().__init__(name)

    def __str__(self) -> str:
        if self.version is not None:
            msg = f"unknown model version: {self.name!r} has no version {self.version}"
        else:
            msg = f"unknown model: {self.name!r}"
        if self.available:
            what = "versions" if self.version is not None else "models"
            msg += f"\nAvailable {what}: " + ", ".join(repr(a) for a in closest(str(self.name), self.available))
        return msg


class ModelFormatError(DataFormatError):
    """An uploaded model, params or labels file cannot be used (HTTP 400)."""

    status_code = 400


class ModelExecutionError(TpcflowError, ValueError):
    """The model raised on the given input, e.g. because of a wrong shape (HTTP 400).

    The model's own message is kept, with the model name and the input shapes.
    """

    status_code = 400


def status_of(err: BaseException) -> int:
    """HTTP status for an exception: its ``status_code``, else by tpcflow error type, else 500."""
    code = getattr(err, "status_code", None)
    if isinstance(code, int):
        return code
    if isinstance(err, KeyError) and isinstance(err, TpcflowError):
        return 404
    if isinstance(err, ServiceError):
        return 503
    if isinstance(err, TpcflowError):
        return 400
    return 500
