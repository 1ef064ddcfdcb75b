"""Walk a persona's ``logs/`` folder, detect each file's format by content and parse it.

Nothing under ``logs/`` is ever written. A file that cannot be used becomes a problem naming it and the
reason; every other file is still used.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from .formats import FORMATS, HEAD_CHARS, detect_format
from .formats._common import load_json
from .messages import Conversation, LoadResult, ParsedFile, ParseError

ATTACHMENT_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".webp",
        ".heic",
        ".bmp",
        ".tif",
        ".tiff",
        ".mp4",
        ".mov",
        ".3gp",
        ".mkv",
        ".webm",
        ".avi",
        ".opus",
        ".ogg",
        ".mp3",
        ".m4a",
        ".aac",
        ".wav",
        ".amr",
        ".pdf",
        ".vcf",
        ".zip",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".ppt",
        ".pptx",
    ]
)
"""Files a chat export carries next to the log (WhatsApp "with media", Telegram, Discord assets)."""

EXPECTED = ", ".join(module.LABEL for module in FORMATS)


def _head(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(HEAD_CHARS * 4)
    except OSError as exc:
        raise ParseError(f"cannot be read: {exc.strerror or exc}") from exc
    if not data.strip():
        raise ParseError("empty file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")[:HEAD_CHARS]
    if b"\x00" in data:
        raise ParseError("binary file, not a chat log")
    return data.decode("utf-8-sig", errors="replace")[:HEAD_CHARS]


def _unknown(path: Path, head: str) -> str:
    if head.lstrip().startswith(("{", "[")):
        try:
            load_json(path.read_text(encoding="utf-8-sig", errors="replace"))
        except ParseError as exc:
            return str(exc)
        return f"JSON, but not a known chat format (expected one of: {EXPECTED})"
    return f"not a known chat format (expected one of: {EXPECTED})"


def load_file(path: Path, root: Path | None = None) -> ParsedFile:
    """Detect and parse one file; raises :class:`ParseError` with the reason when it is unusable.

    Conversation sources are made relative to ``root`` (default: the file's folder).
    """
    head = _head(path)
    module = detect_format(path, head)
    if module is None:
        raise ParseError(_unknown(path, head))
    try:
        parsed = module.parse(path)
    except ParseError as exc:
        raise ParseError(f"{exc} (read as {module.LABEL})") from exc
    except Exception as exc:
        raise ParseError(f"could not be read as {module.LABEL}: {type(exc).__name__}: {exc}") from exc
    if not any(conversation.messages for conversation in parsed.conversations):
        reason = parsed.problems[0] if parsed.problems else "no messages"
        raise ParseError(f"{reason} (read as {module.LABEL})")
    relative = path.relative_to(root).as_posix() if root else path.name
    parsed.conversations = [
        Conversation(messages=c.messages, source=relative + c.source[len(path.name) :])
        if c.source.startswith(path.name)
        else c
        for c in parsed.conversations
    ]
    return parsed


def iter_log_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every candidate file under ``root`` in a stable order, and the ones skipped with why."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    real_root = root.resolve()
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    skipped.append((path, "link to a file outside logs/; not followed"))
                    continue
            if path.suffix.lower() in ATTACHMENT_SUFFIXES:
                skipped.append((path, "attachment, not a chat log"))
                continue
            found.append(path)
    return found, skipped


def load_logs(logs_dir: Path) -> LoadResult:
    """Parse every log under ``logs_dir`` (subfolders included)."""
    root = Path(logs_dir)
    result = LoadResult(root=root)
    if not root.is_dir():
        result.problems.append((root, "no logs folder"))
        return result
    paths, result.skipped = iter_log_files(root)
    for path in paths:
        try:
            result.files.append(load_file(path, root))
        except ParseError as exc:
            result.problems.append((path, str(exc)))
    if not paths and not result.problems:
        result.problems.append((root, "no log files"))
    return result
