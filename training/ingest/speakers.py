"""Who the character is in the logs: the card's ``speakers``, else the speaker named like the folder,
and the one guess the ingest report offers when neither is set."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from store.card import CARD_FILE, PersonaCard

from .errors import NoCharacterSpeaker
from .messages import LoadResult, Message


def normal_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def _folder_form(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name).strip().casefold()


def name_based_counts(result: LoadResult) -> Counter[str]:
    """Messages per speaker in the files that name their speakers (not role-based exports)."""
    counts: Counter[str] = Counter()
    for parsed in result.files:
        for message in parsed.messages:
            if message.role is None and message.kind == "text" and message.speaker:
                counts[message.speaker] += 1
    return counts


def character_matcher(result: LoadResult, persona_name: str, card: PersonaCard) -> Callable[[Message], bool]:
    """Which messages are the character's; raises :class:`NoCharacterSpeaker` when no speaker matches."""
    if card.speakers:
        wanted = {normal_name(name) for name in card.speakers if name.strip()}

        def matches(message: Message) -> bool:
            return any(normal_name(name) in wanted for name in message.names())
    else:
        folder = _folder_form(persona_name)

        def matches(message: Message) -> bool:
            return any(_folder_form(name) == folder for name in message.names())

    counts = name_based_counts(result)
    if counts and not any(
        matches(message) for parsed in result.files for message in parsed.messages if message.role is None
    ):
        listed = ", ".join(f"{name} ({count})" for name, count in counts.most_common(12))
        if len(counts) > 12:
            listed += f" and {len(counts) - 12} more"
        card_path = result.root.parent / CARD_FILE
        if card.speakers:
            why = f"none of the speakers named in {card_path} ({', '.join(card.speakers)}) is in the logs"
        else:
            why = f"no speaker in the logs is named '{persona_name}'"
        raise NoCharacterSpeaker(
            f"{why}; speakers found, with message counts: {listed}. "
            f"Set `speakers:` in {card_path} to the name(s) the character has in the logs.",
            dict(counts),
        )

    def is_character(message: Message) -> bool:
        if message.role is not None:
            return message.role == "character"
        return matches(message)

    return is_character


def guess_character(result: LoadResult) -> str | None:
    """The one speaker present in every name-based file, or None when that is not one speaker
    (a two-person chat has two such speakers: the character is then not obvious)."""
    named = [
        {m.speaker for m in parsed.messages if m.role is None and m.kind == "text" and m.speaker}
        for parsed in result.files
    ]
    named = [speakers for speakers in named if speakers]
    if not named:
        return None
    common = set.intersection(*named)
    return common.pop() if len(common) == 1 else None
