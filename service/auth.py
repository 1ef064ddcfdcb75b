"""The API key check every ``/v1`` router depends on (a module of its own, so routers import no route)."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import unauthorized

bearer = HTTPBearer(auto_error=False, description="Needed only when the server has API keys (PERSONA_API_KEYS).")


def require_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """Refuse a request without one of the server's keys; a server without keys lets every request in."""
    keys = request.app.state.settings.api_keys
    if keys and (credentials is None or credentials.credentials.strip() not in keys):
        raise unauthorized()
