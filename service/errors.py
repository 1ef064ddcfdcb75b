"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with its status codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .metrics import Metrics
from .protocol import ErrorDetail, ErrorResponse


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


def unauthorized() -> APIError:
    return APIError(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.", "invalid_request_error", None, "invalid_api_key")


def install_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error leaves the server in OpenAI's shape; bad input is a 4xx, never a 500."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        metrics.errors.labels(status=str(exc.status)).inc()
        return JSONResponse(exc.body.model_dump(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        body = ErrorResponse(error=ErrorDetail(message=message, type="invalid_request_error", param=param, code="invalid_value"))
        metrics.errors.labels(status="400").inc()
        return JSONResponse(body.model_dump(), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        metrics.errors.labels(status="500").inc()
        body = ErrorResponse(error=ErrorDetail(message=f"internal error: {type(exc).__name__}: {exc}", type="server_error"))
        return JSONResponse(body.model_dump(), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = ErrorResponse(error=ErrorDetail(message=str(exc.detail), type=kind))
        return JSONResponse(body.model_dump(), status_code=exc.status_code)
