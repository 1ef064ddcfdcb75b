"""WhatsApp ``.txt`` chat exports, Android and iOS forms.

Android: ``12/03/23, 14:02 - Name: message``; iOS: ``[12/03/23, 14:02:11] Name: message``. Dates in
any order (DD/MM, MM/DD, YYYY-MM-DD; separators ``/ . -``; 2- or 4-digit years), the order inferred
from the values in the file; 24 h or 12 h clocks (``9:07 PM``, also with U+202F or a no-break space
before the AM/PM). Lines without a timestamp continue the previous message. Lines with no ``Name:``
part are system lines, as are iOS messages whose text starts with U+200E (the mark iOS puts before
generated text); media placeholders and deleted-message stubs are marked as such.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from ..messages import Conversation, Kind, Message, ParsedFile, ParseError
from ._common import clean, read_text

NAME = "whatsapp"
LABEL = "WhatsApp chat export"

_SPACE = "[ \u202f\u00a0]"
_DATE = r"(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4})"
_TIME = (
    rf"(?P<time>\d{{1,2}}[:.]\d{{2}}(?:[:.]\d{{2}})?)"
    rf"(?:{_SPACE}?(?P<ampm>[AaPp]\.?{_SPACE}?[Mm]\.?))?"
)
_ANDROID = re.compile(rf"{_DATE},?{_SPACE}+{_TIME}{_SPACE}+[-\u2013]{_SPACE}+(?P<rest>.*)")
_IOS = re.compile(rf"\[{_DATE},?{_SPACE}+{_TIME}\]{_SPACE}*(?P<rest>.*)")
_LEADING_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"

MAX_NAME = 60

_MEDIA = re.compile(
    r"^(<media omitted>|<attached: [^>]*>|.*\b(image|video|audio|sticker|gif|document|contact card|photo) omitted"
    r"|null|.* \(file attached\)|<view once (voice message|photo|video) omitted>)$",
    re.IGNORECASE,
)
_DELETED = re.compile(
    r"^(this message was deleted\.?|you deleted this message\.?|this message was deleted by admin.*"
    r"|waiting for this message\..*)$",
    re.IGNORECASE,
)
_SYSTEM = re.compile(
    r"^(messages and calls are end-to-end encrypted|messages to this (group|chat) are now secured"
    r"|missed (group )?(voice|video) call|(voice|video) call\b|disappearing messages|your security code with)",
    re.IGNORECASE,
)
_EDITED = re.compile(r"\s*\u200e?<this message was edited>$", re.IGNORECASE)


def match_line(line: str) -> re.Match[str] | None:
    line = line.lstrip(_LEADING_MARKS)
    return _ANDROID.fullmatch(line) or _IOS.fullmatch(line)


def detect(path: Path, head: str) -> bool:
    lines = [line for line in head.splitlines() if line.strip()][:3]
    return any(match_line(line) for line in lines)


def _numbers(date: str) -> tuple[int, int, int, bool]:
    parts = re.split(r"[./-]", date)
    return int(parts[0]), int(parts[1]), int(parts[2]), len(parts[0]) == 4


def infer_order(dates: list[str]) -> str:
    """``ymd``, ``dmy`` or ``mdy`` from the dates of one file."""
    triples = [_numbers(date) for date in dates]
    if any(year_first for *_, year_first in triples):
        return "ymd"
    if any(a > 12 for a, _, _, _ in triples):
        return "dmy"
    if any(b > 12 for _, b, _, _ in triples):
        return "mdy"

    def backward_steps(order: str) -> int:  # an export runs forward in time
        keys = [(c, b, a) if order == "dmy" else (c, a, b) for a, b, c, _ in triples]
        return sum(1 for earlier, later in zip(keys, keys[1:]) if later < earlier)

    return "mdy" if backward_steps("mdy") < backward_steps("dmy") else "dmy"


def to_datetime(date: str, time: str, ampm: str | None, order: str) -> datetime | None:
    a, b, c, _ = _numbers(date)
    year, month, day = {"ymd": (a, b, c), "dmy": (c, b, a), "mdy": (c, a, b)}[order]
    if year < 100:
        year += 2000
    clock = [int(part) for part in re.split(r"[:.]", time)]
    hour, minute, second = clock[0], clock[1], clock[2] if len(clock) > 2 else 0
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm.strip().lower().startswith("p") else 0)
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def split_sender(rest: str) -> tuple[str, str] | None:
    """``Name: text`` into (name, text); None for a system line."""
    index = rest.find(": ")
    if index < 0:
        if rest.endswith(":") and 0 < len(rest) - 1 <= MAX_NAME:
            index = len(rest) - 1
        else:
            return None
    name = rest[:index].strip(_LEADING_MARKS + " ")
    if not name or len(name) > MAX_NAME or any(q in name for q in '"\u201c\u201d'):
        return None
    return name, rest[index + 2 :]


def classify(raw: str) -> tuple[Kind, str]:
    """What a message's text is, and the text to keep."""
    generated = raw.startswith("\u200e")
    text = _EDITED.sub("", clean(raw))
    first_line = text.split("\n", 1)[0]
    if _DELETED.match(text):
        return "deleted", text
    if _MEDIA.match(text) or (_MEDIA.match(first_line) and first_line.startswith("<attached:")):
        return "media", text
    if _MEDIA.match(first_line):  # Android "IMG-0001.jpg (file attached)" with a caption below
        return "text", text.split("\n", 1)[1].strip()
    if generated or _SYSTEM.match(text):
        return "system", text
    return "text", text


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    lines = read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    matches = [match_line(line) for line in lines]
    dates = [match["date"] for match in matches if match]
    if not dates:
        raise ParseError("no WhatsApp message lines")
    order = infer_order(dates)
    # (speaker or None for a system line, time, lines of text)
    pending: list[tuple[str | None, datetime | None, list[str]]] = []
    orphans = 0
    bad_times = 0
    for line, match in zip(lines, matches):
        if match is None:
            if pending:
                pending[-1][2].append(line)
            elif line.strip():
                orphans += 1
            continue
        time = to_datetime(match["date"], match["time"], match["ampm"], order)
        bad_times += time is None
        sender = split_sender(match["rest"])
        if sender is None:
            pending.append((None, time, [match["rest"]]))
        else:
            pending.append((sender[0], time, [sender[1]]))
    messages: list[Message] = []
    for speaker, time, text_lines in pending:
        raw = "\n".join(text_lines).rstrip()
        if speaker is None:
            messages.append(Message(speaker="", text=clean(raw), time=time, kind="system"))
        else:
            kind, text = classify(raw)
            messages.append(Message(speaker=speaker, text=text, time=time, kind=kind))
    if orphans:
        parsed.problems.append(f"{orphans} lines before the first message; ignored")
    if bad_times:
        parsed.problems.append(f"{bad_times} messages with an impossible date or time; kept without a time")
    parsed.conversations.append(Conversation(messages=messages, source=f"{path.name}#0"))
    return parsed
