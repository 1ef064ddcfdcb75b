"""Ingestion: chat exports in ``personas/<name>/logs/`` to training examples.

    examples = persona_examples(persona)                  # a stored persona: logs, card, validation folder
    result = load_logs(logs_dir)                          # other logs: detect and parse every file
    examples = build_examples(result, persona.name, persona.card, ExampleSettings())
    print(format_report(result, examples))

Supported formats (detected by content): OpenAI chat JSONL, ShareGPT, Alpaca, plain transcripts,
WhatsApp (Android and iOS), Telegram Desktop ``result.json`` and DiscordChatExporter JSON.
"""

from .build import build_examples, example_settings, persona_examples
from .cards import CardImportError, import_card
from .errors import IngestError, NoCharacterSpeaker
from .examples import (
    DROP_REASONS,
    ROW_FEATURES,
    ExampleSet,
    ExampleSettings,
    FileCounts,
    TooFewExamples,
    split_sessions,
)
from .formats import FORMATS, detect_format
from .loader import load_file, load_logs
from .messages import Conversation, LoadResult, Message, ParsedFile, ParseError
from .report import format_report

__all__ = [
    "CardImportError",
    "Conversation",
    "DROP_REASONS",
    "ExampleSet",
    "ExampleSettings",
    "FORMATS",
    "FileCounts",
    "IngestError",
    "LoadResult",
    "Message",
    "NoCharacterSpeaker",
    "ParseError",
    "ParsedFile",
    "ROW_FEATURES",
    "TooFewExamples",
    "build_examples",
    "detect_format",
    "example_settings",
    "format_report",
    "import_card",
    "load_file",
    "load_logs",
    "persona_examples",
    "split_sessions",
]
