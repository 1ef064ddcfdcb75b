"""HTTP endpoints: the OpenAI-compatible chat and models API, health and metrics (personas are in
:mod:`service.personas.routes`)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel

from store.catalog import Catalog
from store.jobs import Job, JobStore
from store.names import version_name
from store.registry import Persona

from .auth import require_key
from .chat import ChatService
from .chat_replies import event_stream, whole_reply
from .errors import MODEL_LOADING, model_not_found, require
from .openapi import EVENT_STREAM, error_responses
from .personas.protocol import PERSONA_STATES
from .personas.status import StatusCache, statuses_of
from .protocol import ChatCompletionRequest, ChatCompletionResponse, ModelCard, ModelList
from .sampling import warning_header

log = logging.getLogger("persona.service")

SERVED_STATES = tuple(state for state in PERSONA_STATES if state != "invalid card")


def chat_service(request: Request) -> ChatService:
    """The server's chat service, or the 503 while the engine is still starting."""
    return require(getattr(request.app.state, "chat", None), MODEL_LOADING)


api = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=error_responses(401))
ops = APIRouter()


@api.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**EVENT_STREAM, **error_responses(400, 404, 409, 500, 503)},
)
async def chat_completions(body: ChatCompletionRequest, chat: ChatService = Depends(chat_service)):
    """OpenAI's chat completion; ``model`` is a persona, ``persona@vN`` or the base model. Fields that
    change nothing here are named in the reply's ``Warning`` header."""
    prepared = chat.prepare(body)
    headers = warning_header(prepared.ignored)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = event_stream(chat, prepared, body.model, include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    reply = await whole_reply(chat, prepared, body.model)
    return JSONResponse(reply.model_dump(), headers=headers)


@api.get("/models", response_model=ModelList, responses=error_responses(503))
async def list_models(request: Request, chat: ChatService = Depends(chat_service)) -> Response:
    """The base model, each persona (its live version) and each of its versions (``name@vN``)."""
    listing = await asyncio.to_thread(lambda: _listing(request, chat).model_dump_json())
    return Response(listing, media_type="application/json")


def _listing(request: Request, chat: ChatService) -> ModelList:
    state = request.app.state
    return _model_list(chat, getattr(state, "catalog", None), getattr(state, "statuses", None))


def _model_list(chat: ChatService, catalog: Catalog | None, cache: StatusCache | None) -> ModelList:
    """The listing, read and written as JSON off the event loop so that streams in flight keep
    flowing (a thousand personas make a megabyte)."""
    base = chat.resolver.base
    cards = [ModelCard(id=base.id, root=str(base.path))]
    personas, _ = catalog.scan() if catalog is not None else chat.resolver.store.scan()
    jobs = JobStore(chat.resolver.store.root).all()
    for persona, status in zip(personas, statuses_of(personas, jobs, cache), strict=True):
        cards.append(ModelCard(id=persona.name, root=base.id, parent=base.id, persona=status))
        for version in persona.versions:
            name = f"{persona.name}@{version_name(version)}"
            cards.append(ModelCard(id=name, root=base.id, parent=persona.name, persona=status))
    return ModelList(data=cards)


@api.get("/models/{model_id:path}", response_model=ModelCard, responses=error_responses(404, 503))
async def get_model(model_id: str, request: Request, chat: ChatService = Depends(chat_service)) -> ModelCard:
    for card in (await asyncio.to_thread(_listing, request, chat)).data:
        if card.id == model_id:
            return card
    raise model_not_found(model_id)


class Health(BaseModel):
    status: Literal["ok", "loading"]


@ops.get(
    "/health", response_model=Health, responses={503: {"model": Health, "description": "The model is still loading."}}
)
async def health(request: Request) -> JSONResponse:
    ready = getattr(request.app.state, "chat", None) is not None
    return JSONResponse({"status": "ok" if ready else "loading"}, status_code=200 if ready else 503)


@ops.get("/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus' text format."}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics; the persona counts are taken from the store at each scrape (a persona whose
    card does not validate counts as ``unreadable``, like any folder that cannot be served)."""
    personas, problems, jobs = await asyncio.to_thread(_scan_with_jobs, request)
    pins = getattr(request.app.state, "pins", None)
    if pins is not None:
        await pins.observe()
    counts = Counter(s.status for s in statuses_of(personas, jobs, getattr(request.app.state, "statuses", None)))
    gauge = request.app.state.metrics.personas
    for state in SERVED_STATES:
        gauge.labels(status=state).set(counts[state])
    gauge.labels(status="unreadable").set(len(problems))
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


def _scan_with_jobs(request: Request) -> tuple[list[Persona], dict[str, str], list[Job]]:
    store = request.app.state.store
    catalog = getattr(request.app.state, "catalog", None)
    personas, problems = catalog.scan() if catalog is not None else store.scan()
    return personas, problems, JobStore(store.root).all()
