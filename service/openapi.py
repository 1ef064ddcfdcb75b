"""The OpenAPI schema as the server really answers: OpenAI-shaped errors with their status codes.

Routes list their errors with :func:`error_responses`; FastAPI's own 422 answer is taken out of the
schema, since a request that does not validate gets a 400 here (:mod:`service.errors`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .protocol import ErrorResponse

ERRORS: dict[int, str] = {
    400: "The request is not valid: a value out of range, an unknown or unsupported parameter, a body that is "
    "not JSON, or messages longer than the context (`param` names the parameter, `code` the kind).",
    401: "API keys are set and the request has none or a wrong one (`Authorization: Bearer <key>`).",
    404: "No such model, persona version or persona (`code`: `model_not_found`, `persona_not_found`).",
    409: "The persona cannot be served or changed as it is: its `persona.yaml` does not validate (`code`: "
    "`invalid_card`, the message names the file and field), or its adapter was trained on another base model "
    "or is over the server's LoRA limits (`adapter_not_servable`).",
    500: "Generation failed inside the engine (a server fault, never a client's mistake).",
    503: "The model is still loading, or the server has no job queue; try again shortly (`code`: `not_ready`).",
}
"""What each error status means on this server."""


EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The completion; with `stream: true`, OpenAI's server-sent events ending in `data: [DONE]`.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {"type": "string", "description": "A ChatCompletionChunk, an ErrorResponse or [DONE]."}
                    },
                }
            }
        },
    }
}
"""The streamed answer of a chat completion, one schema per event."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with its meaning and OpenAI's error body."""
    return {status: {"model": ErrorResponse, "description": ERRORS[status]} for status in statuses}


def install_openapi(app: FastAPI) -> None:
    """Serve a schema without FastAPI's 422 (and its validation-error models), which never happens."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            models = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                models.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
