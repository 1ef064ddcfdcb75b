"""Seeding ``persona.yaml`` from a SillyTavern character card.

Reads V2/V3 JSON (``{"spec": "chara_card_v2", "data": {...}}``), V1 flat JSON, PNG cards whose
``tEXt`` chunk ``ccv3`` or ``chara`` holds the card as base64 JSON (``ccv3`` wins when both are there,
as Character Card V3 asks), and CHARX files (a zip with ``card.json`` at its root). A V3 card's
``nickname`` stands for ``{{char}}`` when it is set.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from store.card import PersonaCard
from store.errors import CardError

MAX_DESCRIPTION = 1200
MAX_PROMPT_TRAITS = 300
MAX_QUESTIONS = 3
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CARD_KEYS = ("ccv3", "chara")
"""PNG text chunks that hold a card, in order of precedence."""
_ZIP_SIGNATURE = b"PK\x03\x04"
CHARX_CARD = "card.json"


class CardImportError(CardError, ValueError):
    """The file is not a character card that can be read."""


def _png_card_text(path: Path) -> str:
    try:
        with Image.open(path) as image:
            image.load()
            chunks = dict(getattr(image, "text", {}) or {})
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CardImportError(f"{path}: not a readable PNG: {exc}") from exc
    encoded = next((chunks[key] for key in _CARD_KEYS if key in chunks), None)
    if encoded is None:
        raise CardImportError(f"{path}: PNG without a character card (no 'chara' text chunk, nor 'ccv3')")
    try:
        return base64.b64decode(encoded, validate=False).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise CardImportError(f"{path}: the 'chara' chunk is not base64-encoded JSON") from exc


def _charx_card_text(path: Path) -> str:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(CHARX_CARD).decode("utf-8-sig")
    except KeyError:
        raise CardImportError(f"{path}: CHARX file without {CHARX_CARD} at its root") from None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise CardImportError(f"{path}: not a readable CHARX file: {exc}") from exc


def _read(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CardImportError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    text = None
    if data.startswith(_PNG_SIGNATURE):
        text = _png_card_text(path)
    elif data.startswith(_ZIP_SIGNATURE):
        text = _charx_card_text(path)
    if text is None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CardImportError(f"{path}: not a character card (neither JSON nor PNG)") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardImportError(f"{path}: not a character card: bad JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise CardImportError(f"{path}: not a character card (expected a JSON object)")
    for fields in (raw.get("data"), raw):  # V2/V3 keep the fields under "data"; V1 at the top
        if isinstance(fields, dict) and isinstance(fields.get("name"), str) and fields["name"].strip():
            return fields
    raise CardImportError(f"{path}: not a character card (no 'name' field)")


def _text(fields: dict[str, Any], key: str, name: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str):
        return ""
    value = re.sub(r"\{\{\s*char\s*\}\}|<BOT>", name, value, flags=re.IGNORECASE)
    value = re.sub(r"\{\{\s*user\s*\}\}|<USER>", "you", value, flags=re.IGNORECASE)
    return value.replace("\r\n", "\n").strip()


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a sentence (or word) end before ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if end >= limit // 3:
        return cut[: end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "..."


def _questions(examples: str) -> list[str]:
    found = []
    for line in examples.splitlines():
        match = re.match(r"\s*(?:you|\{\{user\}\}|<USER>)\s*:\s*(.+)", line, flags=re.IGNORECASE)
        if match and match.group(1).strip() not in found:
            found.append(match.group(1).strip())
    return found[:MAX_QUESTIONS]


def import_card(path: Path) -> PersonaCard:
    """A :class:`PersonaCard` from a SillyTavern card file; raises :class:`CardImportError` naming it."""
    path = Path(path)
    fields = _read(path)
    full_name = " ".join(fields["name"].split())
    nickname = fields.get("nickname")
    name = " ".join(nickname.split()) if isinstance(nickname, str) and nickname.strip() else full_name
    description = _text(fields, "description", name)
    personality = _text(fields, "personality", name)
    scenario = _text(fields, "scenario", name)
    greeting = _text(fields, "first_mes", name)
    full = description
    if personality and personality.casefold() not in description.casefold():
        full = f"{full}\n\nPersonality: {personality}" if full else f"Personality: {personality}"
    if scenario and not full:
        full = scenario
    traits = personality or (shorten(description, 200) if description else "")
    prompt = f"You are {name}."
    if traits:
        traits = shorten(traits, MAX_PROMPT_TRAITS)
        prompt += f" {'Personality: ' if personality else ''}{traits}"
        if traits[-1] not in ".!?":
            prompt += "."
    try:
        return PersonaCard(
            display_name=full_name,
            description=shorten(full, MAX_DESCRIPTION) if len(full) > MAX_DESCRIPTION else full,
            speakers=list(dict.fromkeys([full_name, name])),
            system_prompt=prompt,
            greeting=greeting or None,
            example_questions=_questions(_text(fields, "mes_example", name)),
        )
    except ValidationError as exc:
        raise CardImportError(f"{path}: the card does not fit persona.yaml: {exc}") from exc
