"""Shared state and dependencies of the routers (FastAPI ``dependencies.py`` pattern)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tpcflow.serve.http.cache import ModelCache
from tpcflow.serve.http.errors import AuthError
from tpcflow.serve.http.metrics import Metrics
from tpcflow.serve.http.repository import ModelRepository
from tpcflow.serve.http.settings import TOKEN_ENV, Settings

__all__ = ["ServerState", "bearer", "get_state", "require_token"]


@dataclass
class ServerState:
    """Everything a request handler needs; one per app (``app.state.tpcflow``)."""

    settings: Settings
    repository: ModelRepository
    cache: ModelCache
    metrics: Metrics
    started_at: float = field(default_factory=time.time)


def get_state(request: Request) -> ServerState:
    """The app's :class:`ServerState`."""
    return request.app.state.tpcflow


bearer = HTTPBearer(auto_error=False, description=f"API token of the server (config api_token or ${TOKEN_ENV})")


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Check ``Authorization: Bearer <token>`` against the server's token.

    Raises
    ------
    AuthError
        401 if the header is missing or the token wrong; 403 if the server has no token.
    """
    expected = get_state(request).settings.token()
    if not expected:
        raise AuthError(
            f"uploads and deletes are disabled: the server has no API token (set ${TOKEN_ENV} or api_token)",
            status_code=403,
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing API token: send the header 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise AuthError("wrong API token")
