"""``POST /v1/completions``: OpenAI's legacy text completion, for front ends' text-completion modes.

The prompt is taken as given: no chat template and no system prompt, but the persona's adapter and
the same sampling controls (and card defaults) as chat. A list of prompts gets ``n`` choices each,
numbered prompt by prompt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .auth import require_key
from .chat import ChatService, PreparedChat, generation_failed
from .completions_protocol import CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse
from .engine import TokenLogprob
from .errors import MODEL_LOADING, APIError, bad_request, require
from .openapi import EVENT_STREAM, error_responses
from .protocol import ErrorDetail, ErrorResponse, Usage
from .sampling import ignored_fields, token_id, warning_header

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=error_responses(401))


def chat_service(request: Request) -> ChatService:
    return require(getattr(request.app.state, "chat", None), MODEL_LOADING)


def prompt_ids(chat: ChatService, prompt: str | list[int]) -> list[int]:
    """The prompt's token ids, exactly as given (no special tokens added)."""
    if isinstance(prompt, str):
        ids = chat.tokenizer.encode(prompt, add_special_tokens=False)
    else:
        ids = [token_id(t, chat.vocab_size, "prompt") for t in prompt]
    if not ids:
        raise bad_request("prompt: the prompt is empty; give some text to continue.", "prompt", "invalid_value")
    return ids


def prepare(chat: ChatService, request: CompletionRequest) -> list[PreparedChat]:
    """One engine request per prompt; the fields the server ignores go with the first."""
    ignored = ignored_fields(request, chat.strict_parameters)
    target = chat.resolver.resolve(request.model)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prepared = []
    for number, prompt in enumerate(request.prompts()):
        ids = prompt_ids(chat, prompt)
        params = chat.params(request, target, ids, logprobs=request.logprobs)
        prepared.append(PreparedChat(f"{request_id}-{number}", target, ids, params, ignored=ignored))
    return prepared


def legacy_logprobs(tokens: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs:
    """OpenAI's parallel lists; ``text_offset`` counts characters from the start of the choice's text."""
    out = CompletionLogprobs()
    for token in tokens:
        out.tokens.append(token.token)
        out.token_logprobs.append(token.logprob)
        out.top_logprobs.append(dict(token.top))
        out.text_offset.append(offset)
        offset += len(token.token)
    return out


def echoed(chat: ChatService, request: CompletionRequest, prepared: PreparedChat) -> str:
    return chat.tokenizer.decode(prepared.prompt_ids) if request.echo else ""


def usage_of(prepared: list[PreparedChat], tokens: int) -> Usage:
    prompt_tokens = sum(len(p.prompt_ids) for p in prepared)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens)


async def whole_reply(
    chat: ChatService, request: CompletionRequest, prepared: list[PreparedChat]
) -> CompletionResponse:
    choices = []
    tokens = 0
    for number, one in enumerate(prepared):
        reply = await chat.collect(one)
        tokens += reply.tokens
        prefix = echoed(chat, request, one)
        for i, text in enumerate(reply.texts):
            logprobs = legacy_logprobs(reply.logprobs[i], len(prefix)) if request.logprobs is not None else None
            choices.append(
                CompletionChoice(
                    index=number * request.n + i,
                    text=prefix + text,
                    logprobs=logprobs,
                    finish_reason=reply.reasons[i] or "stop",
                )
            )
    return CompletionResponse(
        id=prepared[0].request_id.rsplit("-", 1)[0],
        created=prepared[0].created,
        model=request.model,
        choices=choices,
        usage=usage_of(prepared, tokens),
        system_fingerprint=prepared[0].target.version_label,
    )


async def event_stream(
    chat: ChatService, request: CompletionRequest, prepared: list[PreparedChat]
) -> AsyncIterator[str]:
    """Text deltas as ``text_completion`` chunks, the prompts one after another, usage when asked, ``[DONE]``."""
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    first = prepared[0]

    def event(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        body = CompletionResponse(
            id=first.request_id.rsplit("-", 1)[0],
            created=first.created,
            model=request.model,
            choices=choices,
            usage=usage,
            system_fingerprint=first.target.version_label,
        ).model_dump(exclude_none=True)
        body["choices"] = [{**c.model_dump(exclude_none=True), "finish_reason": c.finish_reason} for c in choices]
        if include_usage:
            body["usage"] = usage.model_dump() if usage else None
        return f"data: {json.dumps(body)}\n\n"

    tokens = 0
    try:
        for number, one in enumerate(prepared):
            offsets = [0] * request.n
            if request.echo:
                prefix = echoed(chat, request, one)
                for i in range(request.n):
                    yield event([CompletionChoice(index=number * request.n + i, text=prefix)])
                    offsets[i] = len(prefix)
            async for chunk in chat.stream(one):
                tokens += chunk.new_tokens
                logprobs = None
                if request.logprobs is not None:
                    logprobs = legacy_logprobs(chunk.logprobs, offsets[chunk.index])
                offsets[chunk.index] += len(chunk.text)
                index = number * request.n + chunk.index
                yield event(
                    [
                        CompletionChoice(
                            index=index, text=chunk.text, logprobs=logprobs, finish_reason=chunk.finish_reason
                        )
                    ]
                )
    except APIError as exc:
        yield f"data: {exc.body.model_dump_json()}\n\n"
        return
    except Exception as exc:  # the status line is gone; tell the client in the stream
        generation_failed(first, exc)
        body = ErrorResponse(error=ErrorDetail(message=f"generation failed: {exc}", type="server_error"))
        yield f"data: {body.model_dump_json()}\n\n"
        return
    if include_usage:
        yield event([], usage_of(prepared, tokens))
    yield "data: [DONE]\n\n"


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={**EVENT_STREAM, **error_responses(400, 404, 409, 500, 503)},
)
async def completions(body: CompletionRequest, chat: ChatService = Depends(chat_service)):
    """OpenAI's text completion; the prompt is continued as given (no chat template), with the
    persona's adapter. Fields that change nothing here are named in the reply's ``Warning`` header."""
    prepared = prepare(chat, body)
    headers = warning_header(prepared[0].ignored)
    if body.stream:
        return StreamingResponse(event_stream(chat, body, prepared), media_type="text/event-stream", headers=headers)
    reply = await whole_reply(chat, body, prepared)
    return JSONResponse(reply.model_dump(), headers=headers)
