"""Telegram Desktop export, ``result.json``: ``{"name", "type", "messages": [...]}``.

Messages of ``type: "service"`` (joins, pins, calls) are system lines; ``text`` is a string or a list
of strings and ``{"type", "text"}`` entities; media without a caption are placeholders. A whole-account
export (``{"chats": {"list": [...]}}``) gives one conversation per chat.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..messages import Conversation, Message, ParsedFile, ParseError
from ._common import clean, load_json, parse_iso, read_text, starts_with

NAME = "telegram"
LABEL = "Telegram Desktop export"

_MESSAGES = re.compile(r'"messages"\s*:\s*\[')
_TELEGRAM_KEYS = re.compile(
    r'"(date_unixtime|from_id|text_entities|personal_chat|private_group|private_supergroup|'
    r'public_supergroup|saved_messages|private_channel|public_channel|bot_chat)"'
)
_ACCOUNT = re.compile(r'"chats"\s*:\s*\{\s*"about"|"chats"\s*:\s*\{\s*"list"')
_MEDIA_KEYS = ("photo", "file", "media_type", "sticker_emoji", "poll", "contact_information", "location_information")


def detect(path: Path, head: str) -> bool:
    if not starts_with(head, "{"):
        return False
    return bool(_ACCOUNT.search(head)) or (bool(_MESSAGES.search(head)) and bool(_TELEGRAM_KEYS.search(head)))


def entity_text(value: Any) -> str:
    """``text`` as exported: a string, or a list of strings and ``{"type", "text"}`` entities."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text", "")) if isinstance(part, dict) else ""
            for part in value
        )
    return ""


def _message(raw: dict[str, Any]) -> Message:
    time = parse_iso(raw.get("date"))
    speaker = raw.get("from") or raw.get("actor") or "Deleted Account"
    if not isinstance(speaker, str):
        speaker = str(speaker)
    if raw.get("type") != "message":
        return Message(speaker=speaker, text=clean(entity_text(raw.get("text"))), time=time, kind="system")
    text = clean(entity_text(raw.get("text")))
    if not text and any(key in raw for key in _MEDIA_KEYS):
        media = raw.get("media_type") or ("photo" if "photo" in raw else "file")
        return Message(speaker=speaker, text=f"<{media}>", time=time, kind="media")
    return Message(speaker=speaker, text=text, time=time)


def _chat(chat: dict[str, Any], source: str, problems: list[str]) -> Conversation | None:
    raw_messages = chat.get("messages")
    if not isinstance(raw_messages, list):
        problems.append(f'{source}: no "messages" list; skipped')
        return None
    messages = [_message(raw) for raw in raw_messages if isinstance(raw, dict)]
    skipped = len(raw_messages) - len(messages)
    if skipped:
        problems.append(f"{source}: {skipped} messages that are not objects; skipped")
    return Conversation(messages=messages, source=source) if messages else None


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    data = load_json(read_text(path))
    if not isinstance(data, dict):
        raise ParseError(f'expected a JSON object with "messages", got {type(data).__name__}')
    if isinstance(data.get("chats"), dict):
        chats = data["chats"].get("list")
        chats = [chat for chat in chats if isinstance(chat, dict)] if isinstance(chats, list) else []
    else:
        chats = [data]
    for index, chat in enumerate(chats):
        conversation = _chat(chat, f"{path.name}#{index}", parsed.problems)
        if conversation:
            parsed.conversations.append(conversation)
    if not parsed.conversations and not parsed.problems:
        raise ParseError("no messages in the export")
    return parsed
