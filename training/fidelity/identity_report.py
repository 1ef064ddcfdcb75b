"""The report's identity figures: train the persona's identity scorer, talk each system through held-out
conversations, score every turn.

The scorer learns the character from its training replies against two kinds of other voice: the
other speakers' lines in the same logs, and a generic assistant's (the base model's answers to the
same user turns, generated here once per report). Nothing held out is used to train it, so the real
held-out replies' own scores are a fair ceiling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from store.fidelity_report import IdentityFigures
from store.fidelity_settings import FidelitySettings

from ..server_client import Ask, Sampling, System, generate
from .dialogue import converse, scenes_from_heldout, turn_figures
from .identity import IDENTITY_THRESHOLD, IdentityScorer, IdentityUnavailable
from .plan import spread

__all__ = ["IDENTITY", "identity_figures", "training_lines"]

IDENTITY = "identity"
"""The key of the identity figures in a report's ``missing``."""

SPEAKER_PREFIX = re.compile(r"^[^:\n]{1,40}: ")
"""``Name: `` that opens another speaker's line in a session with several of them."""


def training_lines(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The character's replies (each row's target) and the other speakers' distinct lines (user turns,
    without a ``Name: `` prefix) of the training rows."""
    mine: list[str] = []
    theirs: dict[str, None] = {}
    for row in rows:
        messages = row["messages"]
        if messages and messages[-1].get("role") == "assistant":
            mine.append(str(messages[-1].get("content", "")))
        for message in messages[:-1]:
            if message.get("role") == "user":
                theirs.setdefault(SPEAKER_PREFIX.sub("", str(message.get("content", ""))).strip())
    return [t for t in mine if t.strip()], [t for t in theirs if t]


def identity_figures(
    *,
    url: str,
    train_rows: Sequence[Mapping[str, Any]],
    heldout_rows: Sequence[Mapping[str, Any]],
    systems: Sequence[System],
    generic: System,
    sampling: Sampling,
    fidelity: FidelitySettings,
    embed: Callable[[Sequence[str]], Any],
    say: Callable[[str], None],
) -> IdentityFigures | str:
    """The identity figures of ``systems`` (keys ``card``, ``prompt``, ``adapter``), or why they cannot be
    taken on this persona's data."""
    if fidelity.dialogue_turns == 0:
        return "fidelity.dialogue_turns is 0"
    scenes = scenes_from_heldout(heldout_rows, turns=fidelity.dialogue_turns, sessions=fidelity.dialogue_sessions)
    if not scenes:
        return "no held-out conversation has a user turn before one of the character's replies"
    mine, theirs = training_lines(train_rows)
    asks = [
        Ask(conversation=({"role": "user", "content": text},), seed=fidelity.seed + 20_000 + i)
        for i, text in enumerate(spread(theirs, fidelity.generic_answers))
    ]
    answers = generate(url, [(generic, asks)], sampling, concurrency=fidelity.concurrency)[0] if asks else []
    others = spread(theirs, fidelity.identity_lines // 2) + [a.text for a in answers]
    try:
        scorer = IdentityScorer.fit(
            spread(mine, fidelity.identity_lines), spread(others, fidelity.identity_lines), embed=embed,
            seed=fidelity.seed,
        )  # fmt: skip
    except IdentityUnavailable as exc:
        return str(exc)
    say(f"identity scorer: AUC {scorer.auc:.3f}; talking {len(scenes)} held-out conversations through")
    replies = converse(
        scenes,
        systems,
        lambda jobs: generate(url, jobs, sampling, concurrency=fidelity.concurrency),
        seed=fidelity.seed + 30_000,
    )
    per_system = {
        key: turn_figures(
            [scorer.score([r.text for r in scene]) for scene in talks],
            IDENTITY_THRESHOLD,
            [scene[-1].prompt_tokens for scene in talks if scene],
        )
        for key, talks in replies.items()
    }
    real = turn_figures([scorer.score([t.real for t in scene.turns]) for scene in scenes], IDENTITY_THRESHOLD)
    return IdentityFigures(
        auc=scorer.auc,
        threshold=IDENTITY_THRESHOLD,
        character_lines=scorer.character_lines,
        other_lines=scorer.other_lines,
        turns=max(len(s.turns) for s in scenes),
        scenes=len(scenes),
        systems=per_system,
        real=real,
    )
