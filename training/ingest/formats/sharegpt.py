"""ShareGPT JSON: a list of ``{"conversations": [{"from", "value"}]}`` (or JSONL of those objects).

``from`` is ``system``, ``human``/``user`` (the other side) or ``gpt``/``assistant`` (the character);
turns of tools and functions are dropped. A record-level ``system`` string (LLaMA-Factory's variant) is
read as a system message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..messages import Conversation, Message, ParsedFile, ParseError
from ._common import clean, content_text, numbered_records, read_text, starts_with

NAME = "sharegpt"
LABEL = "ShareGPT JSON"

ROLES = {
    "system": "system",
    "human": "other",
    "user": "other",
    "gpt": "character",
    "assistant": "character",
    "bot": "character",
    "model": "character",
    "chatgpt": "character",
}
_KEY = re.compile(r'"conversations"\s*:\s*\[')


def detect(path: Path, head: str) -> bool:
    return starts_with(head, "[{") and bool(_KEY.search(head))


def _turns(record: dict[str, Any], where: str, problems: list[str]) -> list[Message]:
    found: list[Message] = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        found.append(Message(speaker="system", text=clean(record["system"]), role="system"))
    for index, turn in enumerate(record["conversations"]):
        if not isinstance(turn, dict):
            problems.append(f"{where}, turn {index + 1}: not an object; skipped")
            continue
        who = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if not isinstance(who, str):
            problems.append(f'{where}, turn {index + 1}: no "from"; skipped')
            continue
        role = ROLES.get(who.strip().lower())
        text = clean(content_text(value))
        if role is None:  # function_call, observation, tool
            found.append(Message(speaker=who, text=text, role="system", kind="system"))
        else:
            found.append(Message(speaker=who, text=text, role=role))  # type: ignore[arg-type]
    return found


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    text = read_text(path)
    items, label = numbered_records(text, "conversations", parsed.problems)
    for number, record in items:
        where = f"{label} {number}"
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            parsed.problems.append(f'{where}: no "conversations" list; skipped')
            continue
        messages = _turns(record, where, parsed.problems)
        if messages:
            parsed.conversations.append(Conversation(messages=messages, source=f"{path.name}#{number}"))
    if not parsed.conversations and not parsed.problems:
        raise ParseError("no conversations in the file")
    return parsed
