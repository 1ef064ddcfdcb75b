"""Preference data in OpenAI's JSONL shape, read by both sides: the fine-tuning API checks and stores
it, the trainer's preference stage trains on it.

One line per pair::

    {"input": {"messages": [{"role": "user", "content": "..."}]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

A persona's pairs live in ``personas/<name>/preference/*.jsonl``; the preferred replies are also the
supervised examples (:func:`chat_line`), so a preference file alone trains a persona.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PREFERENCE_DIR", "PreferenceFileError", "PreferencePair", "chat_line", "parse_preference_file",
           "read_persona_pairs"]  # fmt: skip

PREFERENCE_DIR = "preference"
"""A persona's folder of given preference pairs (JSONL files)."""
ROLES = ("system", "developer", "user", "assistant")


class PreferenceFileError(ValueError):
    """A malformed preference line; the message names the file, the line and the field."""


@dataclass(frozen=True)
class PreferencePair:
    """The turns before a reply, the preferred reply and the non-preferred one."""

    prompt: tuple[dict[str, str], ...]
    chosen: str
    rejected: str


def _message(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"field '{field}' must be an object")
    if value.get("role") not in ROLES:
        raise ValueError(f"field '{field}.role' must be system, user or assistant, got {value.get('role')!r}")
    if not isinstance(value.get("content"), str):
        raise ValueError(f"field '{field}.content' must be a string")
    role = "system" if value["role"] == "developer" else value["role"]
    return {"role": role, "content": value["content"]}


def _reply(record: dict[str, Any], field: str) -> str:
    output = record.get(field)
    if not isinstance(output, list) or len(output) != 1:
        raise ValueError(f"field '{field}' must be a list of one assistant message")
    message = _message(output[0], f"{field}[0]")
    if message["role"] != "assistant" or not message["content"].strip():
        raise ValueError(f"field '{field}[0]' must be a non-empty assistant message")
    return message["content"]


def parse_line(line: str) -> PreferencePair:
    """One JSONL line as a pair; ``ValueError`` naming the field when it is malformed."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("must be a JSON object with input, preferred_output and non_preferred_output")
    source = record.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError("field 'input.messages' must be a non-empty list")
    prompt = tuple(_message(m, f"input.messages[{i}]") for i, m in enumerate(messages))
    if not any(m["role"] == "user" for m in prompt):
        raise ValueError("field 'input.messages' must hold a user message")
    return PreferencePair(prompt, _reply(record, "preferred_output"), _reply(record, "non_preferred_output"))


def parse_preference_file(path: Path, label: str | None = None) -> list[PreferencePair]:
    """Every pair of a JSONL file; :class:`PreferenceFileError` at the first bad line (``label`` names
    the file in the message, its name when not given)."""
    name = label or Path(path).name
    pairs = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(parse_line(line))
            except ValueError as exc:
                raise PreferenceFileError(f"{name}: line {number}: {exc}") from None
    if not pairs:
        raise PreferenceFileError(f"{name}: no preference pairs")
    return pairs


def chat_line(pair: PreferencePair) -> dict[str, Any]:
    """The pair's supervised example: the turns and the preferred reply, as an OpenAI chat JSONL line."""
    return {"messages": [*pair.prompt, {"role": "assistant", "content": pair.chosen}]}


def read_persona_pairs(persona_path: Path) -> list[PreferencePair]:
    """The preference pairs given to a persona (none when it has no preference folder)."""
    folder = Path(persona_path) / PREFERENCE_DIR
    pairs: list[PreferencePair] = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        pairs += parse_preference_file(path, f"{PREFERENCE_DIR}/{path.name}")
    return pairs
