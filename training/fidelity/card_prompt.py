"""The prompt-only persona: the base model carrying the *full* card, as a SillyTavern user writes one.

The adapter has to beat a well-written prompt, not a one-line one, so the comparison system gets the
display name, the description, the system prompt and a few example exchanges taken from the
persona's *training* logs (never the held-out ones, which the report measures against)::

    You are Wren Tuttle, the warm, slightly flustered village baker ...

    Character: Wren
    Wren Tuttle runs The Crooked Loaf, ...

    Example exchanges with Wren:
    User: Any scones left?
    Wren: Oh crumbs, two left, petal.
    ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["example_exchanges", "full_card_prompt"]

MAX_EXAMPLE_CHARS = 400
"""An example longer than this is cut at a word boundary: a card shows the voice, not whole essays."""


def _shorten(text: str, limit: int = MAX_EXAMPLE_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def example_exchanges(rows: Iterable[Mapping[str, Any]], count: int) -> list[tuple[str, str]]:
    """``count`` (user line, character reply) pairs spread evenly over ``rows`` (training examples).

    Only examples whose target follows a user turn qualify, and with enough of them only the longer
    half of the replies; the choice is deterministic.
    """
    pairs = []
    for row in rows:
        messages = row["messages"]
        if len(messages) >= 2 and messages[-2]["role"] == "user" and messages[-1]["role"] == "assistant":
            pairs.append((_shorten(messages[-2]["content"]), _shorten(messages[-1]["content"])))
    if count <= 0 or not pairs:
        return []
    if len(pairs) > 2 * count:
        # One-word answers show little of a voice: keep the replies at least as long as the median.
        median = sorted(len(reply) for _, reply in pairs)[len(pairs) // 2]
        pairs = [pair for pair in pairs if len(pair[1]) >= median]
    if len(pairs) <= count:
        return pairs
    step = len(pairs) / count
    return [pairs[int(i * step)] for i in range(count)]


def full_card_prompt(title: str, description: str, system_prompt: str, exchanges: Sequence[tuple[str, str]]) -> str:
    """The system message of the prompt-only persona."""
    parts = [system_prompt.strip()]
    if description.strip():
        parts.append(f"Character: {title}\n{description.strip()}")
    if exchanges:
        lines = [f"Example exchanges with {title}:"]
        for user, reply in exchanges:
            lines += [f"User: {user}", f"{title}: {reply}", ""]
        parts.append("\n".join(lines).rstrip())
    parts.append(f"Stay in character as {title}: answer the way {title} does in the examples.")
    return "\n\n".join(parts)
