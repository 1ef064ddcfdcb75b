"""What an evaluation asks and scores, chosen from the persona's held-out examples (pure, no model).

Each held-out example is a window of prior turns and one real reply of the character. From them:

* the scored conversations, in three forms that differ only in the system message (none for the base
  model, the full card for the prompt-only persona, the short system prompt for the adapter);
* the held-out prompts every system answers, with the real reply beside each;
* the probe questions asked in several fresh sessions: the card's ``example_questions`` first, then
  the last user line of held-out prompts.

Real logs have every shape: sessions that open with the character's own line, one-line sessions,
replies that are only an emoji. Nothing here may build a conversation the chat template cannot render
or the server refuses, so each use keeps only the examples it can take:

* a held-out prompt needs a user turn before the real reply (an opening line answers nobody);
* a scored reply needs some turn before it, because the base model's form has no system message and
  a template cannot render a reply with nothing before it, and a training weight above 0.

Where nothing is left for a figure, :attr:`Plan.missing` says which and why instead of raising.
Choices are spread evenly over the split and deterministic, so two versions meet the same questions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.chat_format import ROLE_ALIASES, ROLES, weight_of, with_system_prompt

from ..server_client import Ask, System

__all__ = ["FIGURES", "MIN_PROMPTS", "PERPLEXITY", "PROBES", "STYLE", "Plan", "make_plan", "spread"]

PERPLEXITY = "perplexity"
"""Held-out perplexity of the real replies (needs scored conversations)."""
STYLE = "style"
"""Similarity of each system's replies to the real ones (needs held-out prompts)."""
PROBES = "probes"
"""Variation across fresh sessions and prompt tokens per request (needs probe questions)."""
FIGURES: dict[str, tuple[str, ...]] = {
    PERPLEXITY: ("perplexity",),
    STYLE: ("pair_similarity", "centroid_similarity", "classifier_accuracy"),
    PROBES: ("session_variation", "prompt_tokens"),
}
"""The report's per-system figures (``store.fidelity_report.SystemFigures``) each part of the plan feeds."""
MIN_PROMPTS = 2
"""Fewer held-out prompts than this cannot be compared (the classifier needs two of each)."""

Conversation = list[dict[str, Any]]


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most ``count`` items taken evenly from ``items``, in order."""
    if count <= 0:
        return []
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _turns(messages: Sequence[Mapping[str, Any]]) -> Conversation:
    """The row's turns without system messages, unknown roles or empty context: what may be sent."""
    out = []
    for m in messages:
        role, content = ROLE_ALIASES.get(m.get("role"), m.get("role")), m.get("content")
        if role in ROLES and role != "system" and isinstance(content, str) and content.strip():
            out.append({"role": role, "content": content, "weight": weight_of(m)})
    return out


def _as_scored(turns: Conversation) -> Conversation:
    """Only the real reply (the last turn) carries a weight: it alone is scored."""
    return [{**m, "weight": 0.0} for m in turns[:-1]] + [turns[-1]]


def _last_user(conversation: Sequence[Mapping[str, Any]]) -> str:
    return next((m["content"].strip() for m in reversed(conversation) if m["role"] == "user"), "")


@dataclass(frozen=True)
class HeldoutPrompt:
    conversation: tuple[dict[str, str], ...]
    """The turns before the real reply (no system message), ending with a user turn."""
    real: str


@dataclass
class Plan:
    scored: list[Conversation]
    """Held-out conversations (no system message) whose last turn, the real reply, is scored: only
    replies with a turn before them, so the base model's form (no system message) renders too."""
    prompts: list[HeldoutPrompt]
    probes: list[str]
    sessions: int
    seed: int
    missing: dict[str, str] = field(default_factory=dict)
    """Parts of the plan (:data:`PERPLEXITY`, :data:`STYLE`, :data:`PROBES`) left empty, with the reason."""

    def scored_as(self, system_prompt: str | None) -> list[Conversation]:
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


def _prompt(turns: Conversation, fits: Callable[[Sequence[Mapping[str, str]]], bool] | None) -> HeldoutPrompt | None:
    """The turns before the real reply, up to its last user turn, cut from the oldest turn until they
    ``fits`` the server's context; ``None`` when no user turn is left."""
    context = turns[:-1]
    while context and context[-1]["role"] != "user":  # the character speaking twice: answer the user
        context = context[:-1]
    conversation = [{"role": m["role"], "content": m["content"]} for m in context]
    while conversation and fits is not None and not fits(conversation):
        conversation = conversation[1:]
    if not any(m["role"] == "user" for m in conversation):
        return None
    return HeldoutPrompt(conversation=tuple(conversation), real=turns[-1]["content"])


def make_plan(
    heldout: Sequence[Mapping[str, Any]],
    example_questions: Sequence[str],
    *,
    prompts: int,
    probes: int,
    sessions: int,
    scored: int,
    seed: int = 0,
    fits: Callable[[Sequence[Mapping[str, str]]], bool] | None = None,
) -> Plan:
    """The plan for ``heldout`` rows (``{"messages": [...]}``, the real reply last); never raises for
    a row's shape. ``fits`` (optional) says whether a prompt fits the server's context."""
    replies = [t for t in (_turns(row.get("messages") or ()) for row in heldout) if t and t[-1]["role"] == "assistant"]
    scorable = [_as_scored(t) for t in replies if len(t) > 1 and t[-1]["weight"] > 0]
    answerable = [p for p in (_prompt(t, fits) for t in replies) if p is not None]
    chosen = spread(answerable, prompts) if len(answerable) >= MIN_PROMPTS else []
    questions: list[str] = []
    for question in [q.strip() for q in example_questions if isinstance(q, str)]:
        if question and question not in questions and len(questions) < probes:
            questions.append(question)
    for prompt in spread(answerable, probes) + answerable:  # evenly spread first, then any other
        if len(questions) >= probes:
            break
        last = _last_user(prompt.conversation)
        if last and last not in questions:
            questions.append(last)
    missing = {}
    if scored <= 0:
        missing[PERPLEXITY] = "fidelity.perplexity_examples is 0"
    elif not scorable:
        missing[PERPLEXITY] = "no held-out reply has a turn before it to be scored after"
    if not chosen:
        missing[STYLE] = (
            f"{len(answerable)} held-out replies answer a user's turn; at least {MIN_PROMPTS} are needed"
            if prompts > 0
            else "fidelity.heldout_prompts is 0"
        )
    if probes <= 0 or sessions <= 0:
        missing[PROBES] = "fidelity.probes or fidelity.sessions is 0"
    elif not questions:
        missing[PROBES] = "no example_questions in the card and no user turn in the held-out sessions"
    return Plan(
        scored=spread(scorable, scored),
        prompts=chosen,
        probes=questions if sessions > 0 else [],
        sessions=max(sessions, 0),
        seed=seed,
        missing=missing,
    )
