"""The serving logic shared by the API and the chat page: resolve, render, sample, stream.

The page and the API go through this one class, so they answer alike; text completions
(:mod:`service.completions`) use the same engine stream and metrics.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from store.chat_format import prompt_messages, render_prompt
from store.serving_load import ServingLoad

from .engine import Chunk, Engine, GenerationParams, TokenLogprob
from .errors import APIError
from .metrics import Metrics
from .pinning import AdapterPins
from .protocol import ChatCompletionRequest, ChatMessage, SamplingFields
from .resolver import ModelResolver, Target
from .sampling import checked_json_schema, engine_seed, generation_params, ignored_fields

log = logging.getLogger("persona.service")

__all__ = ["ChatService", "Collected", "PreparedChat", "engine_seed", "request_messages"]


@dataclass
class PreparedChat:
    """A request ready for the engine, with the request fields it ignores."""

    request_id: str
    target: Target
    prompt_ids: list[int]
    params: GenerationParams
    created: int = field(default_factory=lambda: int(time.time()))
    ignored: list[str] = field(default_factory=list)


@dataclass
class Collected:
    """A whole reply: text, finish reason and token log probabilities per choice."""

    texts: list[str]
    reasons: list[str | None]
    logprobs: list[list[TokenLogprob]]
    tokens: int = 0


def request_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The request's messages as plain role/content dicts (content parts joined)."""
    return [{"role": m.role, "content": m.text()} for m in messages]


def structured_output(request: ChatCompletionRequest) -> dict[str, Any]:
    """``response_format`` as the engine's structured-output parameters."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_object" or not fmt.json_schema.schema_:
        return {"json_object": True}
    return {"json_schema": checked_json_schema(fmt.json_schema.schema_)}


class ChatService:
    def __init__(
        self,
        engine: Engine,
        resolver: ModelResolver,
        tokenizer: Any,
        metrics: Metrics,
        strict_parameters: bool = False,
        load: ServingLoad | None = None,
        pins: AdapterPins | None = None,
    ) -> None:
        self.engine = engine
        self.resolver = resolver
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.strict_parameters = strict_parameters
        self.load = load
        """Tells a training worker beside the server when requests are generating, so it yields."""
        self.pins = pins
        """Keeps pinned personas' adapters loaded; asked before each generation (chat, completions, page)."""
        self.vocab_size = len(tokenizer)

    def render(self, messages: list[dict[str, str]], system_prompt: str | None) -> list[int]:
        """Prompt ids with the prompt format training used (:mod:`store.chat_format`)."""
        return render_prompt(self.tokenizer, prompt_messages(messages, system_prompt))

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        ignored = ignored_fields(request, self.strict_parameters)
        target = self.resolver.resolve(request.model)
        prompt_ids = self.render(request_messages(request.messages), target.system_prompt)
        params = self.params(
            request, target, prompt_ids, logprobs=request.top_logprobs_asked(), **structured_output(request)
        )
        return PreparedChat(f"chatcmpl-{uuid.uuid4().hex}", target, prompt_ids, params, ignored=ignored)

    def params(self, request: SamplingFields, target: Target, prompt_ids: list[int], **extra: Any) -> GenerationParams:
        """The engine's parameters: the request's, then the persona card's (:mod:`service.sampling`)."""
        return generation_params(
            request, target.sampling, len(prompt_ids), self.engine.max_model_len, self.vocab_size, **extra
        )

    async def stream(self, prepared: PreparedChat) -> AsyncIterator[Chunk]:
        """Chunks from the engine, with the metrics kept."""
        started = time.perf_counter()
        first = True
        kind = prepared.target.version_label
        status = "error"
        if self.pins:
            await self.pins.ensure(prepared.target)
        if self.load:
            self.load.started()
        try:
            async for chunk in self.engine.generate(
                prepared.prompt_ids, prepared.params, prepared.request_id, prepared.target.adapter
            ):
                if first and chunk.text:
                    self.metrics.time_to_first_token.observe(time.perf_counter() - started)
                    first = False
                self.metrics.completion_tokens.labels(kind=_kind(kind)).inc(chunk.new_tokens)
                yield chunk
            status = "ok"
        finally:
            if self.load:
                self.load.finished()
            self.metrics.prompt_tokens.labels(kind=_kind(kind)).inc(len(prepared.prompt_ids))
            self.metrics.requests.labels(kind=_kind(kind), status=status).inc()
            self.metrics.request_seconds.observe(time.perf_counter() - started)

    async def collect(self, prepared: PreparedChat) -> Collected:
        """The whole reply; an engine fault is a 500 in OpenAI's shape (and logged)."""
        n = prepared.params.n
        reply = Collected([""] * n, [None] * n, [[] for _ in range(n)])
        try:
            async for chunk in self.stream(prepared):
                reply.texts[chunk.index] += chunk.text
                reply.tokens += chunk.new_tokens
                reply.logprobs[chunk.index].extend(chunk.logprobs)
                reply.reasons[chunk.index] = chunk.finish_reason or reply.reasons[chunk.index]
        except APIError:
            raise
        except Exception as exc:  # an engine fault: answered (and logged) as a 500, the connection kept
            raise generation_failed(prepared, exc) from exc
        return reply


def generation_failed(prepared: PreparedChat, exc: Exception) -> APIError:
    log.exception("generation failed for %s", prepared.request_id, exc_info=exc)
    return APIError(500, f"generation failed: {exc}", "server_error", None, "generation_failed")


def _kind(label: str) -> str:
    return label if label in ("base", "card") else "adapter"
