"""Shared state and dependencies of the routers (FastAPI ``dependencies.py`` pattern)."""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tpcflow.serve.http.bodies import BodyParser
from tpcflow.serve.http.cache import ModelCache
from tpcflow.serve.http.errors import AuthError, BadRequestError
from tpcflow.serve.http.metrics import Metrics
from tpcflow.serve.http.repository import ModelRepository
from tpcflow.serve.http.settings import TOKEN_ENV, Settings

__all__ = ["ServerState", "State", "bearer", "get_state", "json_response", "require_token"]


@dataclass
class ServerState:
    """Everything a request handler needs; one per app (``app.state.tpcflow``)."""

    settings: Settings
    repository: ModelRepository
    cache: ModelCache
    metrics: Metrics
    parser: BodyParser
    started_at: float = field(default_factory=time.time)
    default_model: str | None = None

    def model_name(self, name: str | None) -> str:
        """``name``, or the model of a request that names none: the default model, else the only one.

        Raises
        ------
        BadRequestError
            If there is no default model and the repository holds none or several.
        """
        if name is not None:
            return name
        if self.default_model is not None:
            return self.default_model
        names = self.repository.names()
        if len(names) == 1:
            return names[0]
        raise BadRequestError(
            f"the request names no model and the server has {len(names)} models {names[:10]}: give 'model', "
            "or set a default model (server setting default_model, or POST /params {\"name\": ...})")


def get_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (a dependency: declare a parameter ``state: State``)."""
    return request.app.state.tpcflow


#: the server state, injected into a handler by FastAPI
State = Annotated[ServerState, Depends(get_state)]


def json_response(data: object, status: int = 200) -> Response:
    """Compact JSON (no spaces) without FastAPI's re-encoding: the one JSON writer of the routes.

    The routes declare the body's pydantic model in ``responses=`` (:mod:`.schemas`) for the
    OpenAPI document.
    """
    return Response(json.dumps(data, separators=(",", ":")), status, media_type="application/json")


bearer = HTTPBearer(auto_error=False, description=f"API token of the server (config api_token or ${TOKEN_ENV})")


def require_token(
    state: State, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Check ``Authorization: Bearer <token>`` against the server's token.

    Raises
    ------
    AuthError
        401 if the header is missing or the token wrong; 403 if the server has no token.
    """
    expected = state.settings.token()
    if not expected:
        raise AuthError(
            f"uploads and deletes are disabled: the server has no API token (set ${TOKEN_ENV} or api_token)",
            status_code=403,
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing API token: send the header 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise AuthError("wrong API token")
