"""What an evaluation asks and scores, chosen from the persona's held-out examples (pure, no model).

Each held-out example is a window of prior turns and one real reply of the character. From them:

* the scored conversations, in three forms that differ only in the system message (none for the base
  model, the full card for the prompt-only persona, the short system prompt for the adapter);
* the held-out prompts every system answers, with the real reply beside each;
* the probe questions asked in several fresh sessions: the card's ``example_questions`` first, then
  the last user line of held-out prompts.

Choices are spread evenly over the split and deterministic, so two versions meet the same questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store.chat_format import with_system_prompt

from .generate import Ask, System

__all__ = ["Plan", "make_plan", "spread"]


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most ``count`` items taken evenly from ``items``, in order."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _without_system(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(m) for m in messages if m["role"] != "system"]


@dataclass(frozen=True)
class HeldoutPrompt:
    conversation: tuple[dict[str, str], ...]
    """The turns before the real reply (no system message)."""
    real: str


@dataclass
class Plan:
    scored: list[list[dict[str, Any]]]
    """Held-out conversations (no system message) whose last turn, the real reply, is scored. Only replies
    to a user turn: an opening line has nothing before it for the base model's form to render."""
    prompts: list[HeldoutPrompt]
    probes: list[str]
    sessions: int
    seed: int

    def scored_as(self, system_prompt: str | None) -> list[list[dict[str, Any]]]:
        """The scored conversations carrying ``system_prompt`` (``None``: the template's own default)."""
        return [with_system_prompt(c, system_prompt) for c in self.scored]

    def heldout_asks(self) -> list[Ask]:
        return [Ask(conversation=p.conversation, seed=self.seed + i) for i, p in enumerate(self.prompts)]

    def probe_asks(self) -> list[Ask]:
        """Every probe in every session, session-major: ``[s0p0, s0p1, ..., s1p0, ...]``."""
        return [
            Ask(conversation=({"role": "user", "content": probe},), seed=self.seed + 10_000 + s * len(self.probes) + p)
            for s in range(self.sessions)
            for p, probe in enumerate(self.probes)
        ]

    def jobs(self, systems: Sequence[System]) -> list[tuple[System, list[Ask]]]:
        """The requests of every system: held-out prompts, then probes."""
        return [(system, self.heldout_asks() + self.probe_asks()) for system in systems]


def make_plan(
    heldout: Sequence[Mapping[str, Any]],
    example_questions: Sequence[str],
    *,
    prompts: int,
    probes: int,
    sessions: int,
    scored: int,
    seed: int = 0,
) -> Plan:
    """The plan for ``heldout`` rows (``{"messages": [...]}``, the real reply last)."""
    conversations = [_without_system(row["messages"]) for row in heldout]
    conversations = [c for c in conversations if c and c[-1]["role"] == "assistant" and c[-1]["content"].strip()]
    answerable = [c for c in conversations if any(m["role"] == "user" for m in c[:-1])]
    chosen = [
        HeldoutPrompt(
            conversation=tuple({"role": m["role"], "content": m["content"]} for m in c[:-1]), real=c[-1]["content"]
        )
        for c in spread(answerable, prompts)
    ]
    questions = [q.strip() for q in example_questions if q.strip()][:probes]
    for prompt in spread(answerable, probes) + answerable:  # evenly spread first, then any other
        if len(questions) >= probes:
            break
        last = next(m["content"] for m in reversed(prompt[:-1]) if m["role"] == "user").strip()
        if last and last not in questions:
            questions.append(last)
    return Plan(scored=spread(answerable, scored), prompts=chosen, probes=questions, sessions=sessions, seed=seed)
