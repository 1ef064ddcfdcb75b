"""One module per log format, each with the same shape:

* ``NAME``: the short id used in reports and rows (``whatsapp``);
* ``LABEL``: the human name (``WhatsApp chat export``);
* ``detect(path, head) -> bool``: whether the file's first characters look like this format;
* ``parse(path) -> ParsedFile``: the whole file, raising :class:`~training.ingest.messages.ParseError`
  when it cannot be used at all.

``FORMATS`` is the detection order: the JSON shapes first (most specific keys first), then WhatsApp,
whose timestamped lines would also pass for a transcript, then plain transcripts.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from . import alpaca, discord, openai_jsonl, sharegpt, telegram, transcript, whatsapp
from ._common import HEAD_CHARS, decode, read_text

FORMATS: list[ModuleType] = [discord, telegram, openai_jsonl, sharegpt, alpaca, whatsapp, transcript]
BY_NAME: dict[str, ModuleType] = {module.NAME: module for module in FORMATS}


def detect_format(path: Path, head: str) -> ModuleType | None:
    """The first format whose ``detect`` accepts the file, or None."""
    for module in FORMATS:
        if module.detect(path, head):
            return module
    return None


def label(name: str) -> str:
    module = BY_NAME.get(name)
    return module.LABEL if module else name


__all__ = ["FORMATS", "BY_NAME", "HEAD_CHARS", "decode", "detect_format", "label", "read_text"]
