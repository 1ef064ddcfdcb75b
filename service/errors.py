"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with its status codes."""

from __future__ import annotations

import re
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from store.errors import CardError, InvalidName, PersonaNotFound, StoreError, VersionNotFound

from .metrics import Metrics
from .protocol import ErrorDetail, ErrorResponse

T = TypeVar("T")

MODEL_LOADING = "The model is still loading; try again shortly."
NO_QUEUE = "This server has no job queue."


class APIError(Exception):
    """Raised anywhere in serving; turned into an OpenAI-shaped JSON error."""

    def __init__(self, status: int, message: str, type: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code))


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str, reason: str | None = None) -> APIError:
    message = f"The model '{model}' does not exist" + (f": {reason}" if reason else "")
    return APIError(404, message, "invalid_request_error", "model", "model_not_found")


def not_ready(message: str) -> APIError:
    """The one 503: what the request needs (the engine, the job queue) is not running on this server."""
    return APIError(503, message, "server_error", None, "not_ready")


def require(value: T | None, message: str) -> T:
    """``value`` (the chat service, the job queue), or the 503 :func:`not_ready` when it is not there."""
    if value is None:
        raise not_ready(message)
    return value


def store_error(exc: StoreError, param: str = "name") -> APIError:
    """The one HTTP answer to each store error, wherever it is met (routes, the page, a chat request).

    A persona whose ``persona.yaml`` does not validate is a 409 naming the file and field: the request
    is fine, the persona's card must be fixed first."""
    if isinstance(exc, (InvalidName, PersonaNotFound)):
        return APIError(404, str(exc), "invalid_request_error", param, "persona_not_found")
    if isinstance(exc, VersionNotFound):
        return APIError(404, str(exc), "invalid_request_error", "version", "version_not_found")
    if isinstance(exc, CardError):
        return APIError(409, f"the persona's card is not valid: {exc}", "invalid_request_error", param, "invalid_card")
    return APIError(409, str(exc), "invalid_request_error", param, "persona_not_loaded")


def unauthorized() -> APIError:
    return APIError(
        401,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


REQUEST_PARTS = {"body", "query", "path", "header", "cookie"}
"""Where FastAPI says a value came from, first in an error's location."""

TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
"""Union members pydantic names in an error's location; they are not part of the parameter's name."""


def param_name(loc: tuple | list) -> str | None:
    """``("body", "messages", 0, "content", "list[TextPart]", 0, "type")`` -> ``messages[0].content[0].type``."""
    name = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            name += f"[{part}]"
        elif index == 0 and part in REQUEST_PARTS:
            continue
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", part) and part not in TYPE_TAGS:
            name += f".{part}" if name else part
    return name or None


def validation_error(errors: list[dict]) -> APIError:
    """One 400 for a request that does not validate, naming the parameter at fault (the deepest
    error under the first one named, so a content part's bad ``type`` beats "not a string")."""
    if not errors:
        return bad_request("The request is not valid.", None, "invalid_value")
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "JSON decode error")
        return bad_request(f"The request body is not valid JSON: {reason}.", None, "invalid_json")
    param = param_name(first["loc"])
    if param is None:
        return bad_request(
            "The request body must be a JSON object, sent with 'Content-Type: application/json'.", None, "invalid_body"
        )
    related = [e for e in errors if _within(param_name(e["loc"]) or "", param)]
    error = max(related, key=lambda e: _depth(param_name(e["loc"]) or ""))
    param = param_name(error["loc"])
    if error["type"] == "extra_forbidden":
        return bad_request(f"Unknown parameter: '{param}'.", param, "unknown_parameter")
    if error["type"] == "unsupported_parameter":
        return bad_request(error["msg"], param, "unsupported_parameter")
    return bad_request(f"{param}: {error['msg']}", param, "invalid_value")


def _depth(name: str) -> int:
    return name.count(".") + name.count("[")


def _within(name: str, param: str) -> bool:
    return name == param or name.startswith((param + ".", param + "["))


def install_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error leaves the server in OpenAI's shape; bad input is a 4xx, never a 500."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        metrics.errors.labels(status=str(exc.status)).inc()
        return JSONResponse(exc.body.model_dump(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _api_error(request, validation_error(list(exc.errors())))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        metrics.errors.labels(status="500").inc()
        body = ErrorResponse(
            error=ErrorDetail(message=f"internal error: {type(exc).__name__}: {exc}", type="server_error")
        )
        return JSONResponse(body.model_dump(), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        metrics.errors.labels(status=str(exc.status_code)).inc()
        body = ErrorResponse(error=ErrorDetail(message=str(exc.detail), type=kind))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=getattr(exc, "headers", None))
