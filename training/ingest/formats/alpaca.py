"""Alpaca JSON: a list of ``{"instruction", "input", "output", "system"?, "history"?}`` (or JSONL).

``history`` is a list of ``[user, assistant]`` pairs before the record's own turn; ``instruction`` and
``input`` (joined by a blank line when both are present) are the user's turn, ``output`` the character's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..messages import Conversation, Message, ParsedFile, ParseError
from ._common import clean, numbered_records, read_text, starts_with

NAME = "alpaca"
LABEL = "Alpaca JSON"

_INSTRUCTION = re.compile(r'"instruction"\s*:')
_OUTPUT = re.compile(r'"output"\s*:')


def detect(path: Path, head: str) -> bool:
    return starts_with(head, "[{") and bool(_INSTRUCTION.search(head)) and bool(_OUTPUT.search(head))


def _text(value: Any) -> str:
    return clean(value) if isinstance(value, str) else ""


def _messages(record: dict[str, Any], where: str, problems: list[str]) -> list[Message]:
    found: list[Message] = []
    system = _text(record.get("system"))
    if system:
        found.append(Message(speaker="system", text=system, role="system"))
    history = record.get("history") or []
    if not isinstance(history, list):
        problems.append(f'{where}: "history" is not a list of [user, assistant] pairs; ignored')
        history = []
    for index, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            problems.append(f"{where}, history {index + 1}: not a [user, assistant] pair; skipped")
            continue
        found.append(Message(speaker="user", text=clean(pair[0]), role="other"))
        found.append(Message(speaker="assistant", text=clean(pair[1]), role="character"))
    prompt = "\n\n".join(part for part in (_text(record.get("instruction")), _text(record.get("input"))) if part)
    found.append(Message(speaker="user", text=prompt, role="other"))
    found.append(Message(speaker="assistant", text=_text(record.get("output")), role="character"))
    return found


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    text = read_text(path)
    items, label = numbered_records(text, "instruction records", parsed.problems)
    for number, record in items:
        where = f"{label} {number}"
        if not isinstance(record, dict) or "output" not in record or "instruction" not in record:
            parsed.problems.append(f'{where}: needs "instruction" and "output"; skipped')
            continue
        messages = _messages(record, where, parsed.problems)
        parsed.conversations.append(Conversation(messages=messages, source=f"{path.name}#{number}"))
    if not parsed.conversations and not parsed.problems:
        raise ParseError("no records in the file")
    return parsed
