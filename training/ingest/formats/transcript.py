"""Plain transcripts: ``Name: message`` lines; a blank line ends a session.

A line without a speaker prefix continues the previous message. ``Note: ...`` inside a message is
ambiguous, so a prefix counts as a speaker only when the name is short (up to 40 characters, 5 words)
without sentence punctuation, and:

* the name is a known speaker (it opens a session or is seen at least twice; label words such as
  ``Note`` or ``PS`` need three times), or
* it is seen once, looks like a name (every word capitalised, or a single handle such as
  ``xXgamerXx``) and is not a label word.

Anything else is a continuation line. Indented lines are always continuations.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ..messages import Conversation, Message, ParsedFile, ParseError
from ._common import clean, read_text, starts_with

NAME = "transcript"
LABEL = "plain transcript"

MAX_NAME = 40
MAX_WORDS = 5
LABEL_WORDS = frozenset(
    [
        "note",
        "notes",
        "nb",
        "n.b.",
        "ps",
        "p.s.",
        "pps",
        "edit",
        "update",
        "warning",
        "tip",
        "hint",
        "example",
        "answer",
        "question",
        "q",
        "a",
        "re",
        "subject",
        "ingredients",
        "step",
        "summary",
        "tldr",
        "tl;dr",
        "important",
        "reminder",
        "source",
        "link",
        "result",
        "also",
        "disclaimer",
        "correction",
        "spoiler",
        "fyi",
        "btw",
        "todo",
        "fact",
        "quote",
        "eta",
        "deadline",
        "price",
        "address",
        "time",
        "date",
    ]
)
_ABBREVIATION = re.compile(r"\b(?:[A-Z][a-z]{0,2}|[A-Z])\.")
_FORBIDDEN = re.compile(r"[.!?,;\"\u201c\u201d()\[\]{}<>*#|/\\=`~]")


def split_prefix(line: str) -> tuple[str, str] | None:
    """(name, text) when ``line`` has a syntactically possible speaker prefix."""
    if not line or line[0].isspace():
        return None
    index = line.find(":")
    if index <= 0 or index > MAX_NAME + 1:
        return None
    after = line[index + 1 :]
    if after and not after[0].isspace():
        return None  # "12:30", "http://", "a:b"
    name = clean(line[:index])
    if not name or len(name) > MAX_NAME or len(name.split()) > MAX_WORDS:
        return None
    if _FORBIDDEN.search(_ABBREVIATION.sub("", name)):
        return None
    return name, after.strip()


def _looks_like_name(name: str) -> bool:
    words = name.split()
    if len(words) == 1:
        return True
    return all(word[0].isupper() or word[0].isdigit() for word in words)


def _blocks(lines: list[str]) -> list[list[tuple[int, str]]]:
    blocks: list[list[tuple[int, str]]] = [[]]
    for number, line in enumerate(lines, start=1):
        if line.strip():
            blocks[-1].append((number, line.rstrip()))
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def detect(path: Path, head: str) -> bool:
    if starts_with(head, "{") or head.lstrip().startswith(("[{", '["', "[[")):
        return False
    lines = [line for line in head.splitlines() if line.strip()][:50]
    prefixed = sum(1 for line in lines if split_prefix(line))
    return prefixed >= 2 and prefixed >= 0.2 * len(lines) or (len(lines) == 1 and prefixed == 1)


def parse(path: Path) -> ParsedFile:
    parsed = ParsedFile(path=path, format=NAME)
    text = read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    blocks = _blocks(text.split("\n"))
    counts: Counter[str] = Counter()
    opening: set[str] = set()
    for block in blocks:
        for position, (_, line) in enumerate(block):
            prefix = split_prefix(line)
            if prefix:
                key = prefix[0].casefold()
                counts[key] += 1
                if position == 0:
                    opening.add(key)

    def is_speaker(name: str) -> bool:
        key = name.casefold()
        if key in opening:
            return True
        if key in LABEL_WORDS:
            return counts[key] >= 3
        return counts[key] >= 2 or _looks_like_name(name)

    orphans: list[int] = []
    for block in blocks:
        turns: list[tuple[str, list[str]]] = []
        for number, line in block:
            prefix = split_prefix(line)
            if prefix and is_speaker(prefix[0]):
                turns.append((prefix[0], [prefix[1]]))
            elif turns:
                turns[-1][1].append(line.strip())
            else:
                orphans.append(number)
        messages = [
            Message(speaker=name, text=clean("\n".join(part for part in parts if part))) for name, parts in turns
        ]
        if messages:
            parsed.conversations.append(
                Conversation(messages=messages, source=f"{path.name}#{len(parsed.conversations)}")
            )
    if orphans:
        shown = ", ".join(str(n) for n in orphans[:5]) + (", ..." if len(orphans) > 5 else "")
        parsed.problems.append(f"{len(orphans)} lines with no speaker before them (line {shown}); ignored")
    if not parsed.conversations:
        raise ParseError("no 'Name: message' lines")
    return parsed
