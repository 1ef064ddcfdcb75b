"""Turning one training example into token ids and a loss mask, with the base tokenizer's own template.

The server renders prompts with ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``;
training renders the same conversation with the same template, so the adapter learns exactly the
token sequence it will see when served. :func:`render_conversation` returns the ids of the whole
rendered conversation (identical, token for token, to ``apply_chat_template(messages, tokenize=True)``)
and a mask that is 1 on the tokens the model is trained to produce:

* the content of every assistant message whose ``weight`` is above 0 (a missing weight counts as 1),
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

from typing import Any, Iterable, Sequence

__all__ = ["RenderError", "render_conversation", "render_text", "end_of_turn_ids"]


class RenderError(ValueError):
    """A conversation cannot be rendered into a training example with this tokenizer's template."""


def _clean(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages as the server will pass them to the template: role and content only."""
    cleaned = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise RenderError(f"message {index}: needs a role of system/user/assistant and a string content")
        cleaned.append({"role": role, "content": content})
    return cleaned


def render_text(tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """The template's text for ``messages`` (what the server feeds the engine)."""
    return tokenizer.apply_chat_template(
        _clean(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that end an assistant turn: the tokenizer's eos token(s)."""
    ids: set[int] = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Iterable):
        ids.update(int(i) for i in eos)
    return ids


def _weight(message: dict[str, Any]) -> float:
    weight = message.get("weight", 1.0)
    return 1.0 if weight is None else float(weight)


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` (no extra special tokens) and, with a fast tokenizer, character offsets."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]), None


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


def render_conversation(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and a 0/1 loss mask of the same length.

    ``messages`` are ``{"role", "content", "weight"?}`` dicts; see the module docstring for what the
    mask covers. Raises :class:`RenderError` when the template is not prefix-stable.
    """
    full = render_text(tokenizer, messages)
    ids, offsets = _encode(tokenizer, full)
    mask = [0] * len(ids)
    stops = end_of_turn_ids(tokenizer)
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or _weight(message) <= 0:
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
            mask[i] = 1
    return ids, mask
