"""The data types every log format is parsed into.

A parser turns one file into :class:`Conversation` objects made of :class:`Message` objects and knows
nothing about which speaker is the character; :mod:`training.ingest.examples` decides that later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

Role = Literal["character", "other", "system"]
"""Known only for role-based formats (OpenAI, ShareGPT, Alpaca): who wrote the message."""

Kind = Literal["text", "system", "media", "deleted"]
"""What a message is: real text, a system line (joins, encryption notices, service messages), a media
placeholder (``<Media omitted>``, an attachment without a caption) or a deleted-message stub. Only
``text`` messages become training data; the others are kept so they can be counted."""


@dataclass(frozen=True)
class Message:
    """One message as it appears in a log."""

    speaker: str
    """The name in the log; for role-based formats the role's name (``user``, ``assistant``)."""
    text: str
    time: datetime | None = None
    role: Role | None = None
    weight: float = 1.0
    """Training weight from the log (OpenAI ``weight``); 0 means: never a training target."""
    kind: Kind = "text"
    aliases: tuple[str, ...] = ()
    """Other names of the same speaker (Discord: the account name behind a nickname)."""

    def names(self) -> tuple[str, ...]:
        return (self.speaker, *self.aliases)


@dataclass
class Conversation:
    """One session as it appears in a file (role-based formats: one per record)."""

    messages: list[Message]
    source: str
    """File path relative to the logs folder, ``#`` and the index of the conversation in the file."""


@dataclass
class ParsedFile:
    """One log file after parsing; ``problems`` are the parts that could not be used."""

    path: Path
    format: str
    conversations: list[Conversation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[Message]:
        return [message for conversation in self.conversations for message in conversation.messages]

    def speaker_counts(self) -> dict[str, int]:
        """Messages of real text per speaker, most first."""
        counts: dict[str, int] = {}
        for message in self.messages:
            if message.kind == "text" and message.role != "system":
                counts[message.speaker] = counts.get(message.speaker, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0].casefold())))


@dataclass
class LoadResult:
    """Every file under a logs folder: the parsed ones, the unusable ones, the skipped ones."""

    root: Path
    files: list[ParsedFile] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    """Files that could not be used at all, with the reason."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Files that are deliberately not chat logs (attachments exported with a chat, hidden files)."""

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def all_problems(self) -> list[tuple[str, str]]:
        """Every problem as (file relative to the logs folder, reason): unusable files and parts of files."""
        found = [(self.relative(path), reason) for path, reason in self.problems]
        for parsed in self.files:
            found.extend((self.relative(parsed.path), reason) for reason in parsed.problems)
        return sorted(found)


class ParseError(Exception):
    """A file cannot be used at all; the message is the reason, without the file name."""
