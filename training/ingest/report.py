"""The ingest report of ``persona ingest``: read by people (:func:`format_report`) or by the server
(:func:`ingest_report`, the data of ``--json``). Neither changes anything on disk."""

from __future__ import annotations

from store.card import PersonaCard
from store.ingest_report import CharacterSource, FileReport, IngestReport, ReportError, SpeakerCount

from .build import build_examples
from .errors import IngestError, NoCharacterSpeaker
from .examples import (
    DROP_REASONS,
    ExampleSet,
    ExampleSettings,
    TooFewExamples,
)
from .formats import label
from .messages import LoadResult
from .speakers import guess_character, name_based_counts

MAX_SPEAKERS = 6


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _speakers(counts: dict[str, int]) -> str:
    shown = ", ".join(f"{name} {count}" for name, count in list(counts.items())[:MAX_SPEAKERS])
    if len(counts) > MAX_SPEAKERS:
        shown += f", and {len(counts) - MAX_SPEAKERS} more"
    return shown or "none"


def format_report(
    result: LoadResult,
    examples: ExampleSet | None,
    error: str | None = None,
    tokens: dict[str, int] | None = None,
) -> str:
    """What was found in the logs and what it gives.

    ``examples`` is None when building them failed (``error`` then says why). ``tokens`` is filled in by
    the training side, e.g. ``{"train": 12000, "held-out": 1300}``.
    """
    lines: list[str] = []
    problem_count = len(result.problems) + sum(len(parsed.problems) for parsed in result.files)
    lines.append(
        f"Logs in {result.root}: {_plural(len(result.files), 'file')} read, {_plural(problem_count, 'problem')}"
    )
    entries: list[tuple[str, list[str]]] = []
    for parsed in result.files:
        name = result.relative(parsed.path)
        counts = examples.per_file.get(name) if examples else None
        messages = len(parsed.messages)
        sessions = counts.sessions if counts else len(parsed.conversations)
        block = [
            f"{name}: {label(parsed.format)}",
            f"  {_plural(messages, 'message')}, {_plural(sessions, 'session')}; "
            f"speakers: {_speakers(parsed.speaker_counts())}",
        ]
        if counts:
            block.append(
                f"  character turns: {counts.character_turns}; examples: {counts.examples}"
                + ("  (the character does not speak in this file)" if not counts.character_turns else "")
            )
            if counts.private:
                found = ", ".join(
                    f"{number} {kind.replace('_', ' ')}" for kind, number in sorted(counts.private.items())
                )
                block.append(f"  private details replaced by placeholders: {found}")
        block += [f"  problem: {reason}" for reason in parsed.problems]
        entries.append((name, block))
    for path, reason in result.problems:
        entries.append((result.relative(path), [f"{result.relative(path)}: PROBLEM: {reason}"]))
    for path, reason in result.skipped:
        entries.append((result.relative(path), [f"{result.relative(path)}: skipped ({reason})"]))
    for _, block in sorted(entries, key=lambda entry: entry[0]):
        lines += [""] + block

    if examples:
        lines.append("")
        who = []
        if examples.character:
            who.append(", ".join(examples.character) + " (by name)")
        if any(counts.format in ("openai", "sharegpt", "alpaca") for counts in examples.per_file.values()):
            who.append("the assistant role (role-based logs)")
        lines.append(f"Character: {'; '.join(who) or 'not found'}")
        lines.append(
            f"Character turns: {examples.character_turns}"
            + (f" ({examples.untrained_turns} with weight 0, context only)" if examples.untrained_turns else "")
        )
        dropped = [f"{count} {DROP_REASONS.get(reason, reason)}" for reason, count in examples.dropped.items() if count]
        lines.append(f"Dropped: {', '.join(dropped) if dropped else 'nothing'}")
        held = len(examples.heldout_sessions)
        lines.append(f"Sessions: {examples.sessions} with examples; {held} held out")
        lines.append(f"Training examples: {examples.train_examples}")
        lines.append(
            f"Held-out examples: {examples.heldout_examples} "
            f"(split by session, {examples.settings.heldout_fraction:.0%} of sessions"
            f"{', at least one' if examples.settings.heldout_fraction > 0 else ''})"
        )
        lines.append(f"Window: up to {examples.settings.window} prior turns per example")
        if tokens:
            lines.append("Tokens: " + ", ".join(f"{name} {count:,}" for name, count in tokens.items()))
        lines.append(f"Data hash: {examples.data_hash[:16]}")
    if error:
        lines += ["", f"ERROR: {error}"]
    return "\n".join(lines) + "\n"


def _speaker_list(counts: dict[str, int]) -> list[SpeakerCount]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0].casefold()))
    return [SpeakerCount(name=name, messages=count) for name, count in ordered]


def _no_character(card: PersonaCard, speakers: dict[str, int]) -> ReportError:
    listed = ", ".join(f"{s.name} ({s.messages})" for s in _speaker_list(speakers)[:12])
    wanted = f"named {' or '.join(card.speakers)}" if card.speakers else "named like the persona"
    return ReportError(
        code="no_character_speaker",
        message=f"no speaker is {wanted}; pick the character among the speakers found: {listed}",
    )


def _examples(
    result: LoadResult, name: str, card: PersonaCard, settings: ExampleSettings
) -> tuple[ExampleSet | None, CharacterSource | None, ReportError | None]:
    """Build the examples, guessing the character when the card names none and no speaker is named
    like the persona (or no persona is named yet)."""
    named = dict(name_based_counts(result))
    source: CharacterSource | None = "card" if card.speakers else "name"
    try:
        try:
            if not name and not card.speakers and named:
                raise NoCharacterSpeaker("no persona name to match", named)
            return build_examples(result, name, card, settings), source, None
        except NoCharacterSpeaker as exc:
            guess = None if card.speakers else guess_character(result)
            if guess is None:
                return None, None, _no_character(card, exc.speakers)
            card = card.model_copy(update={"speakers": [guess]})
            return build_examples(result, name, card, settings), "guess", None
    except TooFewExamples as exc:
        return exc.examples, source, ReportError(code="too_few_examples", message=str(exc))
    except IngestError as exc:
        return None, None, ReportError(code="invalid_settings", message=str(exc))


def ingest_report(result: LoadResult, name: str, card: PersonaCard, settings: ExampleSettings) -> IngestReport:
    """The report as data (``persona ingest --json``): per file, then the character and the examples."""
    examples, source, error = _examples(result, name, card, settings)
    files: list[FileReport] = []
    for parsed in result.files:
        relative = result.relative(parsed.path)
        counts = examples.per_file.get(relative) if examples else None
        files.append(
            FileReport(
                file=relative,
                format=label(parsed.format),
                messages=len(parsed.messages),
                sessions=counts.sessions if counts else len(parsed.conversations),
                speakers=_speaker_list(parsed.speaker_counts()),
                character_turns=counts.character_turns if counts else None,
                examples=counts.examples if counts else None,
                problems=list(parsed.problems),
            )
        )
    for path, reason in result.problems:
        if path != result.root:
            files.append(FileReport(file=result.relative(path), format=None, usable=False, problems=[reason]))
    for path, reason in result.skipped:
        files.append(FileReport(file=result.relative(path), format=None, skipped=reason))
    named = dict(name_based_counts(result))
    if not result.files and error is None:
        reasons = "; ".join(f"{result.relative(path)}: {reason}" for path, reason in result.problems)
        error = ReportError(code="no_usable_logs", message=f"no usable chat logs ({reasons or 'no files'})")
    return IngestReport(
        files=sorted(files, key=lambda f: f.file),
        speakers=_speaker_list(named),
        character=examples.character if examples else [],
        character_from=source if examples and examples.character else None,
        role_based=any(parsed.format in ("openai", "sharegpt", "alpaca") for parsed in result.files),
        character_turns=examples.character_turns if examples else 0,
        train_examples=examples.train_examples if examples else 0,
        heldout_examples=examples.heldout_examples if examples else 0,
        error=error,
    )
