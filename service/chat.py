"""The serving logic shared by the API and the chat page: resolve, render, sample, stream.

The page and the API go through this one class, so they answer alike.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from store.chat_format import prompt_messages, render_prompt

from .engine import Chunk, Engine, GenerationParams
from .errors import bad_request
from .metrics import Metrics
from .protocol import ChatCompletionRequest, ChatMessage
from .resolver import ModelResolver, Target


@dataclass
class PreparedChat:
    """A request ready for the engine."""

    request_id: str
    target: Target
    prompt_ids: list[int]
    params: GenerationParams
    created: int = field(default_factory=lambda: int(time.time()))


def request_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The request's messages as plain role/content dicts (content parts joined)."""
    return [{"role": m.role, "content": m.text()} for m in messages]


def sampling_params(
    request: ChatCompletionRequest, target: Target, prompt_len: int, max_model_len: int
) -> GenerationParams:
    """Request values win, then the persona card's defaults, then OpenAI's defaults."""
    room = max_model_len - prompt_len
    if room <= 0:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens, but the messages take "
            f"{prompt_len} tokens. Shorten the messages.",
            "messages",
            "context_length_exceeded",
        )
    asked = request.max_completion_tokens or request.max_tokens
    if asked is not None and asked > room:
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens; the messages take {prompt_len} "
            f"and {param} asks for {asked}. Lower {param} to at most {room} or shorten the messages.",
            param,
            "context_length_exceeded",
        )
    defaults = target.sampling
    max_tokens = asked or min(defaults.max_tokens or room, room)
    stop = request.stop if isinstance(request.stop, list) else ([request.stop] if request.stop else [])

    def pick(value: float | None, default: float | None, fallback: float) -> float:
        return value if value is not None else (default if default is not None else fallback)

    return GenerationParams(
        max_tokens=max_tokens,
        n=request.n,
        temperature=request.temperature if request.temperature is not None else defaults.effective_temperature(),
        top_p=request.top_p if request.top_p is not None else defaults.effective_top_p(),
        stop=tuple(s for s in stop if s),
        seed=engine_seed(request.seed),
        presence_penalty=pick(request.presence_penalty, defaults.presence_penalty, 0.0),
        frequency_penalty=pick(request.frequency_penalty, defaults.frequency_penalty, 0.0),
    )


def engine_seed(seed: int | None) -> int | None:
    """The request's seed in vLLM's non-negative range: vLLM reads -1 as "no seed", so a negative seed
    is folded onto a non-negative one and still gives the same reply every time."""
    return None if seed is None else seed % 2**63


class ChatService:
    def __init__(self, engine: Engine, resolver: ModelResolver, tokenizer: Any, metrics: Metrics) -> None:
        self.engine = engine
        self.resolver = resolver
        self.tokenizer = tokenizer
        self.metrics = metrics

    def render(self, messages: list[dict[str, str]], system_prompt: str | None) -> list[int]:
        """Prompt ids with the prompt format training used (:mod:`store.chat_format`)."""
        return render_prompt(self.tokenizer, prompt_messages(messages, system_prompt))

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        target = self.resolver.resolve(request.model)
        prompt_ids = self.render(request_messages(request.messages), target.system_prompt)
        params = sampling_params(request, target, len(prompt_ids), self.engine.max_model_len)
        return PreparedChat(
            request_id=f"chatcmpl-{uuid.uuid4().hex}", target=target, prompt_ids=prompt_ids, params=params
        )

    async def stream(self, prepared: PreparedChat) -> AsyncIterator[Chunk]:
        """Chunks from the engine, with the metrics kept."""
        started = time.perf_counter()
        first = True
        kind = prepared.target.version_label
        status = "error"
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
            self.metrics.prompt_tokens.labels(kind=_kind(kind)).inc(len(prepared.prompt_ids))
            self.metrics.requests.labels(kind=_kind(kind), status=status).inc()
            self.metrics.request_seconds.observe(time.perf_counter() - started)


def _kind(label: str) -> str:
    return label if label in ("base", "card") else "adapter"
