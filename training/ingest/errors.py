"""Why logs cannot give a training set; each message says what to do."""

from __future__ import annotations


class IngestError(ValueError):
    """The logs cannot give a training set; the message says what to do."""


class NoCharacterSpeaker(IngestError):
    """No speaker in the name-based logs is the character."""

    def __init__(self, message: str, speakers: dict[str, int]) -> None:
        super().__init__(message)
        self.speakers = speakers
