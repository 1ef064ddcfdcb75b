"""Turn by turn through held-out conversations: does a system stay the character as a talk goes on?

A single reply to a fresh prompt says little about the promise of a persona, which is a voice that
holds through a long conversation while a prompt drifts. Here each system talks through held-out
sessions: the real user turns in order, its *own* earlier replies as the history (never the real
ones), up to a number of turns. Every reply is then scored by the persona's identity scorer
(:mod:`.identity`), and the figures say how identity moves with the turns.

    scenes = scenes_from_heldout(examples.heldout, turns=8, sessions=6)
    replies = converse(scenes, systems, ask_round=lambda jobs: generate(url, jobs, sampling), seed=7)
    figures = turn_figures([scorer.score([r.text for r in scene]) for scene in replies["adapter"]], ...)

Pure apart from ``ask_round``, the function that answers one round of requests (all systems, all
scenes at the same turn) so the engine batches them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from store.fidelity_report import TurnFigures

from ..server_client import Ask, Reply, System

__all__ = ["Scene", "Turn", "TurnFigures", "converse", "scenes_from_heldout", "turn_figures"]

AskRound = Callable[[list[tuple[System, list[Ask]]]], list[list[Reply]]]


@dataclass(frozen=True)
class Turn:
    user: str
    """The real user turn (other speakers' lines merged, as training saw them)."""
    real: str
    """The character's real reply to it."""


@dataclass(frozen=True)
class Scene:
    session: str
    turns: tuple[Turn, ...]


def _turn_of(messages: Sequence[Mapping[str, Any]]) -> Turn | None:
    """The (user, reply) pair of one held-out example, or ``None`` when no user turn precedes the reply
    (a session that opens with the character, or two of its lines in a row)."""
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        return None
    before = messages[-2]
    if before.get("role") != "user" or not str(before.get("content", "")).strip():
        return None
    return Turn(user=str(before["content"]), real=str(messages[-1].get("content", "")))


def scenes_from_heldout(heldout: Sequence[Mapping[str, Any]], *, turns: int, sessions: int) -> list[Scene]:
    """Held-out sessions as scenes of at most ``turns`` (user, real reply) pairs, in order; at most
    ``sessions`` scenes, the longest first (ties in the order of the split). Replies without a user turn
    before them are left out; a session left with no turn is no scene."""
    by_session: dict[str, list[Turn]] = {}
    for row in heldout:
        turn = _turn_of(row["messages"])
        if turn is not None:
            by_session.setdefault(str(row.get("session", "")), []).append(turn)
    scenes = [Scene(session=s, turns=tuple(t[:turns])) for s, t in by_session.items() if t]
    order = sorted(range(len(scenes)), key=lambda i: (-len(scenes[i].turns), i))
    return [scenes[i] for i in order[:sessions]]


def converse(
    scenes: Sequence[Scene], systems: Sequence[System], ask_round: AskRound, *, seed: int
) -> dict[str, list[list[Reply]]]:
    """Each system's replies, scene by scene and turn by turn, each turn asked with that system's own
    history. One call of ``ask_round`` per turn carries every system and every scene still talking."""
    history: dict[tuple[str, int], list[dict[str, str]]] = {(s.key, i): [] for s in systems for i in range(len(scenes))}
    out: dict[str, list[list[Reply]]] = {s.key: [[] for _ in scenes] for s in systems}
    longest = max((len(scene.turns) for scene in scenes), default=0)
    for turn in range(longest):
        talking = [i for i, scene in enumerate(scenes) if turn < len(scene.turns)]
        jobs = []
        for system in systems:
            asks = []
            for i in talking:
                said = history[(system.key, i)] + [{"role": "user", "content": scenes[i].turns[turn].user}]
                asks.append(Ask(conversation=tuple(said), seed=seed + 1000 * i + turn))
            jobs.append((system, asks))
        answers = ask_round(jobs)
        for system, replies in zip(systems, answers):
            for i, reply in zip(talking, replies):
                history[(system.key, i)] += [
                    {"role": "user", "content": scenes[i].turns[turn].user},
                    {"role": "assistant", "content": reply.text},
                ]
                out[system.key][i].append(reply)
    return out


def turn_figures(
    scores: Sequence[Sequence[float]], threshold: float, prompt_tokens: Sequence[int] | None = None
) -> TurnFigures:
    """Figures from identity ``scores`` per scene and turn (``scores[scene][turn]``); ``prompt_tokens``
    is each scene's last request's prompt size, when known. Raises ``ValueError`` without any score."""
    rows = [np.asarray(s, dtype=np.float64) for s in scores if len(s)]
    if not rows:
        raise ValueError("no scored turn")
    longest = max(len(r) for r in rows)
    by_turn = [float(np.mean([r[t] for r in rows if t < len(r)])) for t in range(longest)]
    k = min(3, longest // 2)
    drift = float(np.mean(by_turn[-k:]) - np.mean(by_turn[:k])) if k else None
    means = [float(r.mean()) for r in rows]
    flat = np.concatenate(rows)
    return TurnFigures(
        by_turn=by_turn,
        drift=drift,
        in_character=float(np.mean(flat >= threshold)),
        spread=float(np.std(means)),
        worst=float(min(means)),
        last_prompt_tokens=float(np.mean(prompt_tokens)) if prompt_tokens else None,
        scenes=means,
    )
