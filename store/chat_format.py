"""The prompt format: how a conversation becomes token ids, for serving and for training alike.

An adapter learns exactly the token sequence it is trained on, so the server must render a request
the way training rendered its examples. Both sides call this one module (nanochat keeps its
``render_conversation`` and ``render_for_completion`` side by side for the same reason):

* :func:`with_system_prompt` is the system-prompt rule (the persona's short system prompt goes first
  when the conversation has none), and :func:`prompt_messages` adds the role mapping (``developer`` is
  a ``system`` message): what the template sees;
* :func:`render_prompt` gives the ids the server sends to the engine (ending with the assistant header);
* :func:`render_conversation` gives the ids of a whole training conversation and a loss mask that
  carries each token's training weight.

The template is the base tokenizer's own. :func:`render_conversation`'s ids are identical, token for
token, to ``apply_chat_template(messages, tokenize=True)``, and its mask holds the message's
``weight`` (a missing weight counts as 1; real replies have 1, generated ones less) on

* the content of every assistant message whose ``weight`` is above 0,
* and its end-of-turn token (the tokenizer's ``eos_token``, ``<|im_end|>`` in ChatML), so the model
  learns to stop;

and 0 everywhere else: system and user turns, assistant turns with weight 0 (prior context), the
``<|im_start|>assistant\\n`` header the server adds itself, and whatever the template writes after the
end-of-turn token (a newline in ChatML).

Nothing here knows a particular model's tokens. The character span of each assistant reply is found by
rendering the conversation up to that reply twice, once ending with the generation prompt (the header)
and once ending with the reply itself; both must be prefixes of the full rendering (templates that
rewrite earlier turns are refused). The tokenizer's character offsets then map the span onto tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ROLES",
    "RenderError",
    "end_of_turn_ids",
    "prompt_messages",
    "render_conversation",
    "render_prompt",
    "render_text",
    "trained",
    "weight_of",
    "with_system_prompt",
]

ROLES = ("system", "user", "assistant")
"""Roles the template is given. Requests may also say ``developer``, which is a system message."""

ROLE_ALIASES = {"developer": "system"}
"""OpenAI's newer name for the system role; it is rendered as a system message."""


class RenderError(ValueError):
    """A conversation cannot be rendered with this tokenizer's template."""


def _role(role: Any, index: int) -> str:
    role = ROLE_ALIASES.get(role, role)
    if role not in ROLES:
        raise RenderError(f"message {index}: role must be one of system, developer, user, assistant; got {role!r}")
    return role


def _clean(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Role and content only, with the role mapping applied: what the template is given."""
    cleaned = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str):
            raise RenderError(f"message {index}: content must be a string")
        cleaned.append({"role": _role(message.get("role"), index), "content": content})
    return cleaned


def with_system_prompt(messages: Sequence[Mapping[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """The system-prompt rule: the persona's ``system_prompt`` goes first when the conversation has no
    system message. Training examples and served requests both pass through it, so an adapter is
    trained with the prompt it is served with. Other keys (a training ``weight``) are kept."""
    out = [dict(m) for m in messages]
    if system_prompt and not any(ROLE_ALIASES.get(m.get("role"), m.get("role")) == "system" for m in out):
        out.insert(0, {"role": "system", "content": system_prompt, "weight": 0.0})
    return out


def prompt_messages(messages: Sequence[Mapping[str, Any]], system_prompt: str | None) -> list[dict[str, str]]:
    """A request's conversation as the template sees it: roles mapped, the system-prompt rule applied."""
    return _clean(with_system_prompt(messages, system_prompt))


def render_text(tokenizer: Any, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
    """The template's text for ``messages``."""
    return tokenizer.apply_chat_template(_clean(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` (no extra special tokens) and, with a fast tokenizer, character offsets."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]), None


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Ids of a prompt that asks for the next assistant turn: what the server sends to the engine."""
    return _encode(tokenizer, render_text(tokenizer, messages, add_generation_prompt=True))[0]


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that end an assistant turn: the tokenizer's eos token(s)."""
    ids: set[int] = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Iterable):
        ids.update(int(i) for i in eos)
    return ids


def weight_of(message: Mapping[str, Any]) -> float:
    """The message's training weight: its ``weight``, 1 when it has none."""
    weight = message.get("weight", 1.0)
    return 1.0 if weight is None else float(weight)


def trained(message: Mapping[str, Any]) -> bool:
    """Whether the loss covers this message: an assistant turn whose weight is above 0."""
    return message.get("role") == "assistant" and weight_of(message) > 0


def _token_span(
    tokenizer: Any,
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]] | None,
    start_char: int,
    end_char: int,
) -> tuple[int, int]:
    """Token indices [first, last) covering characters [start_char, end_char) of ``text``."""
    if offsets is not None:
        first = next((i for i, (s, _) in enumerate(offsets) if s >= start_char), len(ids))
        last = next((i for i, (s, _) in enumerate(offsets) if s >= end_char), len(ids))
        return first, last
    # Slow tokenizer: tokenize the two prefixes and check that they are token prefixes of the whole.
    bounds = []
    for cut in (start_char, end_char):
        prefix = list(tokenizer(text[:cut], add_special_tokens=False)["input_ids"])
        if ids[: len(prefix)] != prefix:
            raise RenderError("the tokenizer merges tokens across turn boundaries; use a fast tokenizer")
        bounds.append(len(prefix))
    return bounds[0], bounds[1]


def render_conversation(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
    """Token ids of the whole conversation and a loss mask of the same length: each trained token's
    weight (its message's), 0 elsewhere.

    ``messages`` are ``{"role", "content", "weight"?}`` dicts; see the module docstring for what the
    mask covers. Raises :class:`RenderError` when the template is not prefix-stable.
    """
    full = render_text(tokenizer, messages)
    ids, offsets = _encode(tokenizer, full)
    mask: list[float] = [0] * len(ids)
    stops = end_of_turn_ids(tokenizer)
    for index, message in enumerate(messages):
        if not trained(message):
            continue
        before = render_text(tokenizer, messages[:index], add_generation_prompt=True)
        after = render_text(tokenizer, messages[: index + 1])
        if not (full.startswith(after) and after.startswith(before)):
            raise RenderError(
                f"message {index}: the chat template does not render this conversation as a sequence of "
                "prefixes, so the assistant turn cannot be located"
            )
        first, last = _token_span(tokenizer, full, ids, offsets, len(before), len(after))
        # Keep up to and including the end-of-turn token; what the template adds after it is not learned.
        stop_at = next((i for i in range(last - 1, first - 1, -1) if ids[i] in stops), None)
        if stop_at is not None:
            last = stop_at + 1
        for i in range(first, last):
            mask[i] = weight_of(message)
    return ids, mask
