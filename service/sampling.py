"""From a request's sampling fields to the engine's :class:`GenerationParams`, for chat and text
completions alike: request values win, then the persona card's, then OpenAI's defaults.

Values the schema cannot check (token ids against the vocabulary, ``min_tokens`` against the reply
length, a JSON schema the grammar compiler refuses) are refused here by name, before the engine.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from store.card import SamplingDefaults

from .engine import GenerationParams
from .errors import bad_request
from .protocol import IGNORED, SamplingFields

log = logging.getLogger("persona.service")

LOGIT_BIAS_BOUND = 100.0
"""OpenAI's range for a logit bias; larger values are clamped to it."""


def engine_seed(seed: int | None) -> int | None:
    """The request's seed in vLLM's non-negative range: vLLM reads -1 as "no seed", so a negative seed
    is folded onto a non-negative one and still gives the same reply every time."""
    return None if seed is None else seed % 2**63


def reply_length(request: SamplingFields, defaults: SamplingDefaults, prompt_len: int, max_model_len: int) -> int:
    """``max_tokens`` for the engine: what the request asks, else the card's, within the context left."""
    room = max_model_len - prompt_len
    prompt, take = ("messages", "take") if hasattr(request, "messages") else ("prompt", "takes")
    if room <= 0:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens, but the {prompt} {take} "
            f"{prompt_len} tokens. Shorten the {prompt}.",
            prompt,
            "context_length_exceeded",
        )
    param, asked = request.asked_max_tokens()
    if asked is not None and asked > room:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens; the {prompt} {take} {prompt_len} "
            f"and {param} asks for {asked}. Lower {param} to at most {room} or shorten the {prompt}.",
            param,
            "context_length_exceeded",
        )
    return asked or min(defaults.max_tokens or room, room)


def token_id(value: Any, vocab_size: int, param: str) -> int:
    """A token id from a request (``logit_bias`` keys are strings), refused naming it if the
    vocabulary has no such token."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0 or number >= vocab_size or (isinstance(value, str) and not value.strip().isdigit()):
        raise bad_request(
            f"{param}: token id {value!r} is not in the model's vocabulary (ids 0 to {vocab_size - 1}).",
            param,
            "invalid_token_id",
        )
    return number


def logit_bias(bias: dict[str, float] | None, vocab_size: int) -> tuple[tuple[int, float], ...]:
    bound = LOGIT_BIAS_BOUND
    return tuple(
        (token_id(key, vocab_size, "logit_bias"), max(-bound, min(bound, value))) for key, value in (bias or {}).items()
    )


def checked_json_schema(schema: dict[str, Any]) -> str:
    """The schema as the engine takes it, refused here if the grammar compiler cannot follow it."""
    import xgrammar

    text = json.dumps(schema)
    try:
        xgrammar.Grammar.from_json_schema(text)
    except Exception as exc:  # xgrammar raises RuntimeError or ValueError with the reason
        raise bad_request(
            f"response_format: the JSON schema cannot be enforced: {exc}", "response_format", "invalid_json_schema"
        ) from exc
    return text


def generation_params(
    request: SamplingFields,
    defaults: SamplingDefaults,
    prompt_len: int,
    max_model_len: int,
    vocab_size: int,
    **structured: Any,
) -> GenerationParams:
    """The engine's parameters for ``request``; ``structured`` adds what only one endpoint has
    (``logprobs``, ``json_schema``, ``json_object``)."""
    max_tokens = reply_length(request, defaults, prompt_len, max_model_len)
    stop = request.stop if isinstance(request.stop, list) else ([request.stop] if request.stop else [])
    min_tokens = pick(request.min_tokens, defaults.min_tokens, 0)
    if min_tokens > max_tokens:
        raise bad_request(
            f"min_tokens ({min_tokens}) is more than the reply may take (max_tokens {max_tokens}).",
            "min_tokens",
            "min_tokens_exceed_max_tokens",
        )
    top_k = pick(request.top_k, defaults.top_k, 0)
    return GenerationParams(
        max_tokens=max_tokens,
        n=request.n,
        temperature=request.temperature if request.temperature is not None else defaults.effective_temperature(),
        top_p=request.top_p if request.top_p is not None else defaults.effective_top_p(),
        top_k=0 if top_k < 0 or top_k >= vocab_size else int(top_k),
        min_p=pick(request.min_p, defaults.min_p, 0.0),
        repetition_penalty=pick(request.repetition_penalty, defaults.repetition_penalty, 1.0),
        stop=tuple(s for s in stop if s),
        stop_token_ids=tuple(
            token_id(t, vocab_size, "stop_token_ids") for t in pick(request.stop_token_ids, defaults.stop_token_ids, ())
        ),
        min_tokens=min_tokens,
        seed=engine_seed(request.seed),
        presence_penalty=pick(request.presence_penalty, defaults.presence_penalty, 0.0),
        frequency_penalty=pick(request.frequency_penalty, defaults.frequency_penalty, 0.0),
        logit_bias=logit_bias(pick(request.logit_bias, defaults.logit_bias, None), vocab_size),
        **structured,
    )


def pick(value: Any, default: Any, fallback: Any) -> Any:
    return value if value is not None else (default if default is not None else fallback)


def ignored_fields(request: SamplingFields, strict: bool) -> list[str]:
    """Fields of ``request`` that change nothing here, each logged once; with ``strict`` the first is
    refused by name instead, as OpenAI's API does."""
    names = request.ignored_fields()
    if strict and names:
        name = names[0]
        info = type(request).model_fields.get(name)
        if info is None:
            raise bad_request(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        reason = info.json_schema_extra[IGNORED]  # type: ignore[index]
        raise bad_request(
            f"Unsupported parameter: '{name}' is not supported by this server ({reason}).",
            name,
            "unsupported_parameter",
        )
    for name in names:
        log.warning("ignored request field %r: this server does nothing with it", name)
    return names


def warning_header(ignored: list[str]) -> dict[str, str]:
    """The reply's ``Warning`` header (RFC 9111's code 299) naming the ignored fields; none if none."""
    if not ignored:
        return {}
    names = [header_safe(name) for name in ignored[:MAX_NAMED]]
    more = f" and {len(ignored) - MAX_NAMED} more" if len(ignored) > MAX_NAMED else ""
    return {"Warning": f'299 - "ignored fields: {", ".join(names)}{more}"'}


MAX_NAMED = 20
"""Ignored fields named in the header; the rest are counted."""


def header_safe(name: str) -> str:
    """A field name as header text: printable ASCII, no quote or backslash (a client may send any key)."""
    text = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "?" for c in name)
    return text[:64]
