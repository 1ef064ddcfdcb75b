"""OpenAI chat fine-tuning JSONL: one ``{"messages": [{"role", "content", "weight"?}]}`` per line.

Also accepted: a JSON array of the same records. Role-based: ``assistant`` is the character.
``weight: 0`` on an assistant message keeps it as context but never as a training target.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..messages import Conversation, Message, ParsedFile, ParseError
from ._common import (
    as_weight,
    clean,
    content_text,
    first_json_line,
    numbered_records,
    read_text,
    starts_with,
)

NAME = "openai"
LABEL = "OpenAI chat JSONL"

ROLES = {"system": "system", "developer": "system", "user": "other", "assistant": "character"}
_LOOKS_LIKE = re.compile(r'^\s*\{.*"messages"\s*:\s*\[\s*(\]|\{[^{}]*"role"\s*:)')
_ARRAY = re.compile(r'^\s*\[\s*\{\s*"messages"\s*:\s*\[\s*(\]|\{[^{}]*"role"\s*:)')


def detect(path: Path, head: str) -> bool:
    if _ARRAY.match(head.lstrip("\ufeff")):
        return True
    if not starts_with(head, "{"):
        return False
    first = first_json_line(head)
    if isinstance(first, dict):
        messages = first.get("messages")
        return isinstance(messages, list) and (
            not messages or (isinstance(messages[0], dict) and "role" in messages[0])
        )
    first_line = next((line for line in head.splitlines() if line.strip()), "")
    return bool(_LOOKS_LIKE.match(first_line))


def parse_messages(raw: list, where: str, problems: list[str]) -> list[Message]:
    """A list of ``{"role", "content", "weight"?}`` (shared with ShareGPT's role/content variant)."""
    found: list[Message] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            problems.append(f"{where}, message {index + 1}: not a {{role, content}} object; skipped")
            continue
        role_name = item["role"]
        role = ROLES.get(role_name)
        text = clean(content_text(item.get("content")))
        weight = as_weight(item.get("weight"), f"{where}, message {index + 1}", problems)
        if role is None:  # tool and function results: not conversation
            found.append(Message(speaker=role_name, text=text, role="system", kind="system"))
        else:
            found.append(Message(speaker=role_name, text=text, role=role, weight=weight))  # type: ignore[arg-type]
    return found


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    text = read_text(path)
    items, label = numbered_records(text, "conversations", parsed.problems)
    for number, record in items:
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            parsed.problems.append(f'{label} {number}: no "messages" list; skipped')
            continue
        messages = parse_messages(record["messages"], f"{label} {number}", parsed.problems)
        if messages:
            parsed.conversations.append(Conversation(messages=messages, source=f"{path.name}#{number}"))
    if not parsed.conversations and not parsed.problems:
        raise ParseError("no conversations in the file")
    return parsed
