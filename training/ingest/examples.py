"""From parsed logs to training examples: who the character is, sessions, windows, the held-out split.

Each example is one of the character's turns with a bounded window of the turns before it::

    {"messages": [{"role": "system" | "user" | "assistant", "content": str, "weight": float}, ...],
     "session": str}

The first message is the persona's system prompt, the last is the target (weight 1.0, or its weight in
the log); every message before the target has weight 0.0. The training side depends on this shape.

The training sessions are also given whole (:attr:`ExampleSet.train_sessions`): one row per session,
every character turn carrying its weight, so a trainer can render each conversation once instead of
once per reply. The held-out split is always per reply: that is what evaluation scores.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from datasets import Dataset, Features, List, Value

from store.card import CARD_FILE, PersonaCard
from store.chat_format import with_system_prompt
from store.example_settings import ExampleSettings

from .cleaning import DROP_REASONS, kept_messages, split_on_gaps
from .errors import IngestError
from .messages import LoadResult, Message
from .privacy import PrivacySettings, privacy_settings, scrub
from .speakers import character_matcher, normal_name

ROW_FEATURES = Features(
    {
        "messages": List({"role": Value("string"), "content": Value("string"), "weight": Value("float64")}),
        "session": Value("string"),
    }
)
"""The ``datasets`` schema of every row, also of an empty split."""


class TooFewExamples(IngestError):
    """Fewer training examples than :attr:`ExampleSettings.min_examples`; ``examples`` has the counts."""

    def __init__(self, message: str, examples: ExampleSet) -> None:
        super().__init__(message)
        self.examples = examples


@dataclass
class FileCounts:
    """What one file gave."""

    format: str
    messages: int
    sessions: int = 0
    character_turns: int = 0
    examples: int = 0
    private: dict[str, int] = field(default_factory=dict)
    """Private details replaced by placeholders, by kind (never the values)."""


@dataclass
class ExampleSet:
    """The examples of one persona, split by session, with the counts the report shows."""

    train: Dataset
    heldout: Dataset
    data_hash: str
    """sha256 over the normalised rows of both splits: the same logs give the same hash."""
    character: list[str]
    """Speaker names taken as the character in name-based logs (role-based logs use the assistant role)."""
    files: int
    messages: int
    """Messages read, before anything was dropped."""
    sessions: int
    """Sessions that give at least one example."""
    heldout_sessions: list[str]
    character_turns: int
    """The character's turns after merging, trained or not."""
    untrained_turns: int
    """Character turns with weight 0 in the log: context only, never a target."""
    dropped: dict[str, int]
    """Messages left out, by reason (keys of :data:`DROP_REASONS`)."""
    per_file: dict[str, FileCounts] = field(default_factory=dict)
    """Counts per file, keyed by the path relative to the logs folder."""
    settings: ExampleSettings = field(default_factory=ExampleSettings)
    train_sessions: Dataset = field(default_factory=lambda: _dataset([]))
    """The training sessions whole, one row each, every character reply a target (with its weight):
    the same replies as ``train``, each rendered once."""

    def training_rows(self, whole_sessions: bool) -> Dataset:
        """What a run trains on: the whole sessions, or one example per reply."""
        return self.train_sessions if whole_sessions else self.train

    @property
    def train_examples(self) -> int:
        return len(self.train)

    @property
    def heldout_examples(self) -> int:
        return len(self.heldout)

    @property
    def examples(self) -> int:
        return len(self.train) + len(self.heldout)


@dataclass
class _Turn:
    role: Literal["user", "assistant"]
    content: str
    weight: float


def _scrubbed(turns: list[_Turn], privacy: PrivacySettings, counts: FileCounts) -> list[_Turn]:
    """The turns with private details replaced by placeholders, counted per kind into ``counts``."""
    out = []
    for turn in turns:
        text, found = scrub(turn.content, privacy)
        for kind, number in found.items():
            counts.private[kind] = counts.private.get(kind, 0) + number
        out.append(_Turn(turn.role, text, turn.weight) if found else turn)
    return out


def _turns(messages: list[Message], sides: list[bool], prefixes: bool) -> list[_Turn]:
    """Messages to alternating turns: ``sides[i]`` says whether message ``i`` is the character's."""
    others = {normal_name(m.speaker) for m, mine in zip(messages, sides) if not mine and m.role is None}
    prefix = prefixes and len(others) > 1
    turns: list[_Turn] = []
    last_speaker: str | None = None
    for message, mine in zip(messages, sides):
        role: Literal["user", "assistant"] = "assistant" if mine else "user"
        weight = message.weight if mine else 0.0
        text = message.text.strip()
        if prefix and not mine and message.speaker != last_speaker:
            text = f"{message.speaker}: {text}"
        if turns and turns[-1].role == role and (role == "user" or turns[-1].weight == weight):
            turns[-1].content += "\n" + text
        else:
            turns.append(_Turn(role=role, content=text, weight=weight))
        last_speaker = message.speaker
    return turns


def _window_start(turns: list[_Turn], target: int, window: int, first_user: int | None) -> int:
    """Where the target's window begins: at most ``window`` turns back, never on a character turn that
    has a user turn before it (the example would then open with the character out of context)."""
    start = max(0, target - window)
    while start < target and turns[start].role == "assistant" and first_user is not None and first_user < start:
        start += 1
    if start == target and first_user is not None and first_user < target:
        # Only when differing weights kept two character turns apart: reach back to the last user turn.
        start = next(index for index in range(target - 1, -1, -1) if turns[index].role == "user")
    return start


def _rows(turns: list[_Turn], system_prompt: str, session: str, window: int) -> list[dict[str, Any]]:
    rows = []
    first_user = next((index for index, turn in enumerate(turns) if turn.role == "user"), None)
    for index, turn in enumerate(turns):
        if turn.role != "assistant" or turn.weight <= 0:
            continue
        start = _window_start(turns, index, window, first_user)
        messages = [{"role": t.role, "content": t.content, "weight": 0.0} for t in turns[start:index]]
        messages.append({"role": "assistant", "content": turn.content, "weight": float(turn.weight)})
        messages = with_system_prompt(messages, system_prompt)
        rows.append({"messages": messages, "session": session})
    return rows


def _session_row(turns: list[_Turn], system_prompt: str, session: str) -> dict[str, Any]:
    """The session as one row up to its last trained reply (it has one: it gave per-reply rows)."""
    last = max(i for i, t in enumerate(turns) if t.role == "assistant" and t.weight > 0)
    messages = [
        {"role": t.role, "content": t.content, "weight": float(t.weight) if t.role == "assistant" else 0.0}
        for t in turns[: last + 1]
    ]
    return {"messages": with_system_prompt(messages, system_prompt), "session": session}


def session_rank(session: str) -> str:
    """A stable pseudo-random key of a session id (sha1, the same in every process)."""
    return hashlib.sha1(session.encode("utf-8")).hexdigest()


def split_sessions(sessions: Iterable[str], fraction: float) -> set[str]:
    """The held-out sessions: the ``fraction`` of sessions with the smallest hash, at least one of 3 or more."""
    ordered = sorted(set(sessions), key=lambda s: (session_rank(s), s))
    if fraction <= 0 or len(ordered) < 2:
        return set()
    count = round(len(ordered) * fraction)
    if len(ordered) >= 3:
        count = max(count, 1)
    return set(ordered[: min(count, len(ordered) - 1)])


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def data_hash(train: list[dict[str, Any]], heldout: list[dict[str, Any]]) -> str:
    lines = sorted([f"train\t{_canonical(r)}" for r in train] + [f"heldout\t{_canonical(r)}" for r in heldout])
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _dataset(rows: list[dict[str, Any]]) -> Dataset:
    if not rows:
        return Dataset.from_dict({"messages": [], "session": []}, features=ROW_FEATURES)
    return Dataset.from_list(rows, features=ROW_FEATURES)


def _card_privacy(card: PersonaCard) -> PrivacySettings:
    try:
        return privacy_settings(card.privacy)
    except ValueError as exc:
        raise IngestError(f"{CARD_FILE}: {exc}") from exc


def split_examples(
    result: LoadResult,
    persona_name: str,
    card: PersonaCard,
    settings: ExampleSettings | None = None,
) -> ExampleSet:
    """Turn loaded logs into training examples and a held-out split by session.

    Raises :class:`NoCharacterSpeaker` when no speaker in name-based logs is the character and
    :class:`TooFewExamples` when fewer than ``settings.min_examples`` training examples result.
    """
    settings = settings or ExampleSettings()
    system_prompt = card.effective_system_prompt(persona_name)
    is_character = character_matcher(result, persona_name, card)
    privacy = _card_privacy(card)

    dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    seen_messages: set[tuple[str, str, Any]] = set()
    seen_conversations: set[tuple[Any, ...]] = set()
    per_file: dict[str, FileCounts] = {}
    rows_by_session: dict[str, list[dict[str, Any]]] = {}
    whole: dict[str, list[dict[str, Any]]] = {}
    matched_names: set[str] = set()
    character_turns = untrained = total_messages = 0

    for parsed in sorted(result.files, key=lambda p: result.relative(p.path)):
        counts = FileCounts(format=parsed.format, messages=len(parsed.messages))
        per_file[result.relative(parsed.path)] = counts
        total_messages += counts.messages
        for conversation in parsed.conversations:
            kept = kept_messages(conversation.messages, seen_messages, dropped)
            fingerprint = tuple((m.speaker, m.role, m.text, m.time, m.weight) for m in kept)
            if fingerprint in seen_conversations:
                dropped["duplicate"] += len(kept)
                continue
            seen_conversations.add(fingerprint)
            parts = split_on_gaps(kept, settings.session_gap)
            for number, part in enumerate(parts, start=1):
                session = conversation.source if len(parts) == 1 else f"{conversation.source}/{number}"
                sides = [is_character(message) for message in part]
                turns = _scrubbed(_turns(part, sides, settings.name_prefixes), privacy, counts)
                matched_names.update(m.speaker for m, mine in zip(part, sides) if mine and m.role is None)
                assistant = [turn for turn in turns if turn.role == "assistant"]
                character_turns += len(assistant)
                counts.character_turns += len(assistant)
                untrained += sum(1 for turn in assistant if turn.weight <= 0)
                rows = _rows(turns, system_prompt, session, settings.window)
                if rows:
                    rows_by_session.setdefault(session, []).extend(rows)
                    whole.setdefault(session, []).append(_session_row(turns, system_prompt, session))
                    counts.sessions += 1
                    counts.examples += len(rows)

    heldout_ids = split_sessions(rows_by_session, settings.heldout_fraction)
    train = [row for session, rows in rows_by_session.items() if session not in heldout_ids for row in rows]
    heldout = [row for session, rows in rows_by_session.items() if session in heldout_ids for row in rows]
    examples = ExampleSet(
        train=_dataset(train),
        heldout=_dataset(heldout),
        data_hash=data_hash(train, heldout),
        character=sorted(matched_names, key=str.casefold),
        files=len(result.files),
        messages=total_messages,
        sessions=len(rows_by_session),
        heldout_sessions=sorted(heldout_ids),
        character_turns=character_turns,
        untrained_turns=untrained,
        dropped=dict(dropped),
        per_file=per_file,
        settings=settings,
        train_sessions=_dataset([row for s, rows in whole.items() if s not in heldout_ids for row in rows]),
    )
    if len(train) < settings.min_examples:
        raise TooFewExamples(
            f"only {len(train)} training examples ({len(heldout)} more held out) from "
            f"{len(rows_by_session)} sessions in {result.root}; at least {settings.min_examples} are needed. "
            "Add more of the character's logs.",
            examples,
        )
    return examples
