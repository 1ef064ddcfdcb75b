"""What a set of chat logs gives, as data: the contract between ``persona ingest --json`` and the server.

The training side builds it (``training/ingest/report.py``); the server reads it from that command's
output to show an upload's report in the page and the API before anything is stored or trained, so
the server never imports the parsers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CharacterSource = Literal["card", "name", "guess"]
"""How the character's speaker names were found: the card's ``speakers``, the speaker named like the
persona, or the one speaker present in every name-based file."""

ReportErrorCode = Literal["no_character_speaker", "too_few_examples", "no_usable_logs", "invalid_settings"]


class SpeakerCount(BaseModel):
    name: str
    messages: int = Field(description="Messages of text by this speaker.")


class FileReport(BaseModel):
    """One file of the logs: what it was read as and what it gave."""

    file: str = Field(description="The path relative to the logs folder.")
    format: str | None = Field(description="The export format found, e.g. 'WhatsApp chat export'; None if unusable.")
    messages: int = 0
    sessions: int = 0
    speakers: list[SpeakerCount] = Field(default_factory=list)
    character_turns: int | None = Field(default=None, description="None when no examples could be built.")
    examples: int | None = None
    usable: bool = Field(default=True, description="False: the file cannot be read as any supported export.")
    skipped: str | None = Field(default=None, description="Why the file is deliberately not read (an attachment).")
    problems: list[str] = Field(default_factory=list, description="What could not be used, and why.")


class ReportError(BaseModel):
    code: ReportErrorCode
    message: str


class IngestReport(BaseModel):
    """Every file's findings and the totals: who the character is, how many of its turns, how many examples."""

    files: list[FileReport]
    speakers: list[SpeakerCount] = Field(
        default_factory=list, description="Speakers of the name-based logs, most messages first."
    )
    character: list[str] = Field(
        default_factory=list, description="The speaker names taken as the character in name-based logs."
    )
    character_from: CharacterSource | None = None
    role_based: bool = Field(
        default=False, description="Some logs mark the character by role (the assistant), not by name."
    )
    character_turns: int = 0
    train_examples: int = 0
    heldout_examples: int = 0
    error: ReportError | None = Field(default=None, description="Why no training set can be built from these logs.")

    @property
    def unusable(self) -> list[FileReport]:
        return [f for f in self.files if not f.usable]
