"""The human-readable ingest report that ``persona ingest <name>`` prints (it changes nothing on disk)."""

from __future__ import annotations

from .examples import DROP_REASONS, ExampleSet
from .formats import label
from .messages import LoadResult

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
