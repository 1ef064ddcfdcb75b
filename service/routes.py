"""HTTP endpoints: the OpenAI-compatible API, persona status, health and metrics."""

from __future__ import annotations

import json
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from store.names import version_name
from store.errors import StoreError
from store.registry import Persona

from .chat import ChatService, PreparedChat
from .errors import APIError, unauthorized
from .persona_status import persona_status
from .protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    PersonaInfo,
    ResponseMessage,
    Usage,
)


def chat_service(request: Request) -> ChatService:
    chat = getattr(request.app.state, "chat", None)
    if chat is None:
        raise APIError(503, "The model is still loading; try again shortly.", "server_error", None, "not_ready")
    return chat


def require_key(request: Request) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() not in keys:
        raise unauthorized()


api = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
ops = APIRouter()


@api.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(body: ChatCompletionRequest, chat: ChatService = Depends(chat_service)):
    prepared = chat.prepare(body)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(chat, prepared, body.model, include_usage), media_type="text/event-stream")
    texts = [""] * body.n
    reasons: list[str | None] = [None] * body.n
    tokens = 0
    async for chunk in chat.stream(prepared):
        texts[chunk.index] += chunk.text
        tokens += chunk.new_tokens
        reasons[chunk.index] = chunk.finish_reason or reasons[chunk.index]
    prompt_tokens = len(prepared.prompt_ids)
    return ChatCompletionResponse(
        id=prepared.request_id,
        created=prepared.created,
        model=body.model,
        choices=[
            Choice(index=i, message=ResponseMessage(content=texts[i]), finish_reason=reasons[i] or "stop")
            for i in range(body.n)
        ],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens),
        system_fingerprint=prepared.target.version_label,
    )


async def _sse(chat: ChatService, prepared: PreparedChat, model: str, include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's stream: a role chunk per choice, content deltas, a finish chunk, usage, ``[DONE]``."""

    def event(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=prepared.request_id, created=prepared.created, model=model, choices=choices, usage=usage,
            system_fingerprint=prepared.target.version_label,
        )
        data = chunk.model_dump(exclude_none=not include_usage)
        if include_usage and usage is None:
            data["usage"] = None
        return f"data: {json.dumps(data)}\n\n"

    n = prepared.params.n
    for i in range(n):
        yield event([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
    tokens = 0
    try:
        async for chunk in chat.stream(prepared):
            tokens += chunk.new_tokens
            if chunk.text:
                yield event([ChunkChoice(index=chunk.index, delta=DeltaMessage(content=chunk.text))])
            if chunk.finish_reason:
                yield event([ChunkChoice(index=chunk.index, delta=DeltaMessage(), finish_reason=chunk.finish_reason)])
    except APIError as exc:
        yield f"data: {exc.body.model_dump_json()}\n\n"
        return
    except Exception as exc:  # the status line is gone; tell the client in the stream
        body = ErrorResponse(error=ErrorDetail(message=f"generation failed: {exc}", type="server_error"))
        yield f"data: {body.model_dump_json()}\n\n"
        return
    if include_usage:
        prompt_tokens = len(prepared.prompt_ids)
        yield event([], Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens))
    yield "data: [DONE]\n\n"


def _persona_info(persona: Persona, version: int | None = None) -> PersonaInfo:
    return PersonaInfo(
        name=persona.name,
        display_name=persona.title,
        status="trained" if persona.live else "card",
        live_version=version_name(persona.live) if persona.live else None,
        versions=[version_name(v) for v in persona.versions],
        version=version_name(version) if version else None,
    )


@api.get("/models", response_model=ModelList)
async def list_models(chat: ChatService = Depends(chat_service)) -> ModelList:
    base = chat.resolver.base
    cards = [ModelCard(id=base.id, root=str(base.path))]
    personas, _ = chat.resolver.store.scan()
    for persona in personas:
        cards.append(ModelCard(id=persona.name, root=base.id, parent=base.id, persona=_persona_info(persona)))
        for version in persona.versions:
            cards.append(
                ModelCard(
                    id=f"{persona.name}@{version_name(version)}", root=base.id, parent=persona.name,
                    persona=_persona_info(persona, version),
                )
            )
    return ModelList(data=cards)


@api.get("/models/{model_id}", response_model=ModelCard)
async def get_model(model_id: str, chat: ChatService = Depends(chat_service)) -> ModelCard:
    for card in (await list_models(chat)).data:
        if card.id == model_id:
            return card
    from .errors import model_not_found

    raise model_not_found(model_id)


@api.get("/personas")
async def list_personas(request: Request) -> JSONResponse:
    store = request.app.state.store
    personas, problems = store.scan()
    return JSONResponse({
        "data": [persona_status(p).model_dump() for p in personas],
        "problems": [{"persona": name, "message": msg} for name, msg in problems.items()],
    })


@api.get("/personas/{name}")
async def get_persona(name: str, request: Request) -> JSONResponse:
    try:
        persona = request.app.state.store.get(name)
    except StoreError as exc:
        raise APIError(404, str(exc), "invalid_request_error", "name", "persona_not_found") from exc
    return JSONResponse(persona_status(persona).model_dump())


@ops.get("/health")
async def health(request: Request) -> JSONResponse:
    ready = getattr(request.app.state, "chat", None) is not None
    return JSONResponse({"status": "ok" if ready else "loading"}, status_code=200 if ready else 503)


@ops.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
