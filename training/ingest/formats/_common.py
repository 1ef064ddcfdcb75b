"""Helpers shared by the format modules: reading text, JSON with line numbers, cleaning strings."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ..messages import ParseError

HEAD_CHARS = 65536
"""How much of a file detection looks at."""

# Direction marks WhatsApp (iOS) and others put around names and at line starts, plus the BOM.
_INVISIBLE = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")


def decode(data: bytes) -> str:
    """Bytes of a log to text: UTF-8 (with or without BOM) or UTF-16 with a BOM.

    Raises :class:`ParseError` for empty or binary files and undecodable bytes.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"not valid UTF-16 text ({exc.reason} at byte {exc.start})") from exc
    else:
        if b"\x00" in data[:HEAD_CHARS]:
            raise ParseError("binary file, not a chat log")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ParseError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from exc
    if not text.strip():
        raise ParseError("empty file")
    return text


def read_text(path: Path) -> str:
    """The whole file as text; :class:`ParseError` when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot be read: {exc.strerror or exc}") from exc
    return decode(data)


def clean(text: str) -> str:
    """Drop direction marks and BOMs, normalise line ends, trim."""
    return _INVISIBLE_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n").strip()


def _reason(exc: json.JSONDecodeError) -> str:
    return exc.msg.removesuffix(" at").lower()


def load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"bad JSON at line {exc.lineno}, column {exc.colno}: {_reason(exc)}") from exc
    except RecursionError as exc:
        raise ParseError("JSON nested too deeply") from exc


def iter_jsonl(text: str, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line; bad lines are added to ``problems``.

    Raises :class:`ParseError` when no line at all is valid JSON.
    """
    good = 0
    bad: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"bad JSON at line {number}, column {exc.colno}: {_reason(exc)}")
            continue
        except RecursionError:
            bad.append(f"bad JSON at line {number}: nested too deeply")
            continue
        good += 1
        yield number, value
    if not good and bad:
        raise ParseError(bad[0] + ("" if len(bad) == 1 else f" (and {len(bad) - 1} more bad lines)"))
    problems.extend(bad)


def records(value: Any, what: str) -> list[Any]:
    """A JSON document that is a list of records (or one record)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise ParseError(f"expected a list of {what}, got {type(value).__name__}")


def numbered_records(text: str, what: str, problems: list[str]) -> tuple[list[tuple[int, Any]], str]:
    """Records of a JSON array or of JSONL, numbered, with the word that names a place in the file."""
    if text.lstrip().startswith("["):
        return list(enumerate(records(load_json(text), what), start=1)), "record"
    return list(iter_jsonl(text, problems)), "line"


def first_json_line(head: str) -> Any:
    """The first non-blank line of ``head`` parsed as JSON, or None."""
    for line in head.splitlines():
        if line.strip():
            try:
                return json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return None
    return None


def starts_with(head: str, chars: str) -> bool:
    stripped = head.lstrip(_INVISIBLE + " \t\r\n")
    return bool(stripped) and stripped[0] in chars


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (Telegram, Discord), or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None


def content_text(content: Any) -> str:
    """OpenAI-style content: a string, or a list of parts of which the text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def as_weight(value: Any, where: str, problems: list[str]) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return float(value)
    problems.append(f"{where}: weight {value!r} is not between 0 and 1; used 1")
    return 1.0
