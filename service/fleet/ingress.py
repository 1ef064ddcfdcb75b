"""The fleet's front door: reads ``model`` from OpenAI requests and routes them by persona version."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from store.adapters import read_live
from store.errors import StoreError
from store.names import check_name, version_name

from ..protocol import ErrorDetail, ErrorResponse
from .protocol import ForwardedRequest, ResponseHead

log = logging.getLogger("persona.fleet")

MODEL_PATHS = {"/v1/chat/completions", "/v1/completions"}
"""Requests whose body names the model they run on, routed to a replica holding it."""

HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}
"""Headers of the replica's answer that belong to its own framing, not to the client's."""

REPLICA_HEADER = "x-replica"


def routing_key(personas_dir: Path, model: str) -> str:
    """``persona`` becomes ``persona@vN`` (its live version), so a persona and its live version share
    one replica and a new version starts a new key; anything else is routed by its own name."""
    if "@" in model or model.startswith("ft:"):
        return model
    try:
        live = read_live(personas_dir / check_name(model))
    except (StoreError, OSError, ValueError):
        return model
    return f"{model}@{version_name(live)}" if live else model


def requested_model(body: bytes) -> str | None:
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) and model else None


def error_body(message: str, code: str) -> ErrorResponse:
    return ErrorResponse(error=ErrorDetail(message=message, type="server_error", code=code))


def unavailable(message: str) -> JSONResponse:
    return JSONResponse(error_body(message, "replica_unavailable").model_dump(), status_code=503)


def replica_died(exc: BaseException) -> bool:
    """A failure of the replica itself (its process or actor), not an answer of the app."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorUnavailableError))


class FleetIngress:
    """A Ray Serve deployment class (wrapped by :func:`service.fleet.app.build_fleet`)."""

    def __init__(self, engines: Any, personas_dir: Path, retries: int) -> None:
        self.engines = engines
        self.personas_dir = personas_dir
        self.retries = retries

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        forwarded = ForwardedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query.encode(),
            headers=list(request.headers.items()),
            body=body,
            client=(request.client.host, request.client.port) if request.client else None,
        )
        model = requested_model(body) if request.method == "POST" and request.url.path in MODEL_PATHS else None
        options: dict[str, Any] = {"stream": True}
        if model:
            options["multiplexed_model_id"] = routing_key(self.personas_dir, model)
        # A chat or a read can be sent again while nothing has come back; other writes are sent once.
        attempts = 1 + (self.retries if model or request.method == "GET" else 0)
        for attempt in range(attempts):
            stream = self.engines.options(**options).forward.remote(forwarded)
            try:
                head = await stream.__anext__()
                break
            except Exception as exc:
                if not replica_died(exc):
                    log.exception("the fleet could not answer %s %s", request.method, request.url.path)
                    return unavailable(f"no engine replica could answer: {type(exc).__name__}: {exc}")
                log.warning("replica died before answering (attempt %d of %d): %s", attempt + 1, attempts, exc)
        else:
            return unavailable("the engine replica serving this request stopped; try again shortly")
        assert isinstance(head, ResponseHead)
        headers = {k: v for k, v in head.headers if k.lower() not in HOP_HEADERS}
        headers[REPLICA_HEADER] = head.replica
        if (head.header("content-type") or "").startswith("text/event-stream"):
            return StreamingResponse(relay(stream), status_code=head.status, headers=headers)
        try:
            content = b"".join([piece async for piece in stream])
        except Exception as exc:
            log.warning("replica failed while answering: %s", exc)
            return unavailable(f"the engine replica stopped while answering: {exc}")
        return Response(content, status_code=head.status, headers=headers)


async def relay(stream: Any) -> AsyncIterator[bytes]:
    """The replica's event stream as it comes; if the replica dies, the stream ends with an error event
    in OpenAI's shape, as the server's own stream does when generation fails."""
    try:
        async for piece in stream:
            yield piece
    except Exception as exc:
        log.warning("replica failed mid-stream: %s", exc)
        body = error_body(f"the engine replica stopped mid-stream: {type(exc).__name__}", "replica_failed")
        yield f"data: {body.model_dump_json()}\n\n".encode()
