"""OpenAI's chat answers from the engine's chunks: the whole reply, and the event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from .chat import ChatService, PreparedChat, log
from .engine import TokenLogprob
from .errors import APIError
from .protocol import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaMessage,
    ErrorDetail,
    ErrorResponse,
    ResponseMessage,
    TopLogprob,
    Usage,
)
from .protocol import TokenLogprob as WireLogprob


def utf8(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def choice_logprobs(tokens: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    """OpenAI's ``logprobs.content``: each token with its log probability and the likeliest ones."""
    return ChoiceLogprobs(
        content=[
            WireLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=utf8(t.token),
                top_logprobs=[TopLogprob(token=tok, logprob=lp, bytes=utf8(tok)) for tok, lp in t.top],
            )
            for t in tokens
        ]
    )


def usage(prepared: PreparedChat, tokens: int) -> Usage:
    prompt_tokens = len(prepared.prompt_ids)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens)


async def whole_reply(chat: ChatService, prepared: PreparedChat, model: str) -> ChatCompletionResponse:
    reply = await chat.collect(prepared)
    wants_logprobs = prepared.params.logprobs is not None
    return ChatCompletionResponse(
        id=prepared.request_id,
        created=prepared.created,
        model=model,
        choices=[
            Choice(
                index=i,
                message=ResponseMessage(content=text),
                finish_reason=reply.reasons[i] or "stop",
                logprobs=choice_logprobs(reply.logprobs[i]) if wants_logprobs else None,
            )
            for i, text in enumerate(reply.texts)
        ],
        usage=usage(prepared, reply.tokens),
        system_fingerprint=prepared.target.version_label,
    )


async def event_stream(
    chat: ChatService, prepared: PreparedChat, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's stream: a role chunk per choice, content deltas (with their tokens' log probabilities
    when asked), a finish chunk, usage, ``[DONE]``."""

    def event(choices: list[ChunkChoice], use: Usage | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=prepared.request_id,
            created=prepared.created,
            model=model,
            choices=choices,
            usage=use,
            system_fingerprint=prepared.target.version_label,
        )
        data = chunk.model_dump(exclude_none=not include_usage)
        if include_usage and use is None:
            data["usage"] = None
        return f"data: {json.dumps(data)}\n\n"

    for i in range(prepared.params.n):
        yield event([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
    wants_logprobs = prepared.params.logprobs is not None
    tokens = 0
    try:
        async for chunk in chat.stream(prepared):
            tokens += chunk.new_tokens
            if chunk.text or (wants_logprobs and chunk.logprobs):
                logprobs = choice_logprobs(chunk.logprobs) if wants_logprobs else None
                yield event([ChunkChoice(index=chunk.index, delta=DeltaMessage(content=chunk.text), logprobs=logprobs)])
            if chunk.finish_reason:
                yield event([ChunkChoice(index=chunk.index, delta=DeltaMessage(), finish_reason=chunk.finish_reason)])
    except APIError as exc:
        yield f"data: {exc.body.model_dump_json()}\n\n"
        return
    except Exception as exc:  # the status line is gone; tell the client in the stream
        log.exception("generation failed for %s", prepared.request_id)
        body = ErrorResponse(error=ErrorDetail(message=f"generation failed: {exc}", type="server_error"))
        yield f"data: {body.model_dump_json()}\n\n"
        return
    if include_usage:
        yield event([], usage(prepared, tokens))
    yield "data: [DONE]\n\n"
