"""DiscordChatExporter JSON: ``{"guild", "channel", "messages": [...]}``.

A speaker is known by ``author.nickname`` (shown) and ``author.name`` (an alias); both match the card's
speakers. Messages of type ``Default`` and ``Reply`` are conversation; other types (joins, pins, calls,
thread creations) are system lines. Empty content with attachments, embeds or stickers is a media
placeholder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..messages import Conversation, Message, ParsedFile, ParseError
from ._common import clean, load_json, parse_iso, read_text, starts_with

NAME = "discord"
LABEL = "DiscordChatExporter JSON"

CONVERSATION_TYPES = {"Default", "Reply"}
_GUILD = re.compile(r'"guild"\s*:')
_CHANNEL = re.compile(r'"channel"\s*:')
_MESSAGES = re.compile(r'"messages"\s*:\s*\[')


def detect(path: Path, head: str) -> bool:
    return (
        starts_with(head, "{")
        and bool(_GUILD.search(head))
        and bool(_CHANNEL.search(head))
        and bool(_MESSAGES.search(head))
    )


def _author(raw: Any) -> tuple[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        return "Unknown", ()
    name = raw.get("name") if isinstance(raw.get("name"), str) else ""
    nickname = raw.get("nickname") if isinstance(raw.get("nickname"), str) else ""
    shown = nickname.strip() or name.strip() or "Unknown"
    aliases = tuple(n.strip() for n in (name,) if n.strip() and n.strip() != shown)
    return shown, aliases


def _message(raw: dict[str, Any]) -> Message:
    speaker, aliases = _author(raw.get("author"))
    time = parse_iso(raw.get("timestamp"))
    text = clean(raw.get("content") if isinstance(raw.get("content"), str) else "")
    kind = raw.get("type", "Default")
    if kind not in CONVERSATION_TYPES:
        return Message(speaker=speaker, text=text, time=time, kind="system", aliases=aliases)
    if not text:
        if any(raw.get(key) for key in ("attachments", "embeds", "stickers")):
            return Message(speaker=speaker, text="<attachment>", time=time, kind="media", aliases=aliases)
    return Message(speaker=speaker, text=text, time=time, aliases=aliases)


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    data = load_json(read_text(path))
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ParseError('expected a JSON object with a "messages" list')
    raw_messages = data["messages"]
    messages = [_message(raw) for raw in raw_messages if isinstance(raw, dict)]
    if len(messages) != len(raw_messages):
        parsed.problems.append(f"{len(raw_messages) - len(messages)} messages that are not objects; skipped")
    if messages:
        parsed.conversations.append(Conversation(messages=messages, source=f"{path.name}#0"))
    elif not parsed.problems:
        raise ParseError("no messages in the export")
    return parsed
