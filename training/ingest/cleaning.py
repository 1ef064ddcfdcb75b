"""Which messages of a conversation stay, and where a conversation splits into sessions."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from .messages import Message

DROP_REASONS = {
    "system": "system lines",
    "media": "media placeholders",
    "deleted": "deleted messages",
    "empty": "empty messages",
    "duplicate": "duplicates",
}
"""Why messages are left out, as counted in :attr:`ExampleSet.dropped`."""


def _drop_reason(message: Message) -> str | None:
    if message.kind != "text":
        return message.kind
    if message.role == "system":
        return "system"
    if not message.text.strip():
        return "empty"
    return None


def kept_messages(messages: list[Message], seen: set[tuple[str, str, Any]], dropped: Counter[str]) -> list[Message]:
    """A conversation's messages less system lines, media and duplicates (counted in ``dropped``)."""
    kept: list[Message] = []
    for message in messages:
        reason = _drop_reason(message)
        if reason is None and message.time is not None:
            key = (message.speaker, message.text, message.time)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        elif reason is None and kept and kept[-1].time is None:
            if (kept[-1].speaker, kept[-1].text) == (message.speaker, message.text):
                reason = "duplicate"
        if reason:
            dropped[reason] += 1
        else:
            kept.append(message)
    return kept


def split_on_gaps(messages: list[Message], gap: timedelta) -> list[list[Message]]:
    parts: list[list[Message]] = []
    previous = None
    for message in messages:
        new = not parts
        if not new and previous is not None and message.time is not None:
            try:
                new = message.time - previous > gap
            except TypeError:  # a timestamp with a zone next to one without
                new = False
        if new:
            parts.append([])
        parts[-1].append(message)
        if message.time is not None:
            previous = message.time
    return parts
