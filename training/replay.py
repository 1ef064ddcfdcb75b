"""Replay: general conversation mixed into every training run, so a voice is learnt without forgetting
how to talk about anything else.

The conversations are the base model's own greedy answers to a bundled set of everyday prompts
(:data:`REPLAY_SET`), made once per base model and cached (:mod:`training.base_answers`), so training
stays offline. They are trained at full weight with no system message, so the chat template's
default system prompt applies: the adapter is asked to stay the base model there, and to be the
character under the persona's own prompt. This set is not the fidelity report's general set
(:mod:`training.fidelity.general`): the forgetting figure is measured on conversations training
never saw.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from store.base_model import BaseModel

from .base_answers import Answerer, PromptSet, base_answers, conversations, local_answerer, server_answerer
from .server_client import ServerError

__all__ = [
    "REPLAY_PROMPTS",
    "REPLAY_SET",
    "replay_answerer",
    "replay_conversations",
    "replay_count",
    "replay_rows",
]

REPLAY_PROMPTS: tuple[str, ...] = (
    "How do I make a cup of tea?",
    "What is a good way to remember people's names?",
    "Why is the sky blue?",
    "Give me two ideas for a rainy afternoon.",
    "How do plants drink water?",
    "What does a librarian do?",
    "How can I keep my houseplants alive?",
    "Explain what a budget is.",
    "What is the tallest animal?",
    "How do I tie a shoelace?",
    "Why do we have seasons?",
    "What are some polite ways to say no?",
    "How does a rainbow form?",
    "Give me a tip for learning a new language.",
    "What is the moon made of?",
    "How do I clean a frying pan?",
    "What is a haiku?",
    "Why do cats purr?",
    "How long should I rest between workouts?",
    "What is the difference between a lake and a pond?",
    "Suggest a simple breakfast.",
    "How do bees make honey?",
    "What is a good way to apologise to a friend?",
    "Why does bread go stale?",
    "How do I write a shopping list?",
    "What is gravity?",
    "Describe a sunset in one sentence.",
    "How do I start a conversation with someone new?",
    "What is recycling good for?",
    "How do birds know where to fly in winter?",
    "Give me a fun fact about the ocean.",
    "What should I do if I feel stressed?",
)
REPLAY_MAX_TOKENS = 96
REPLAY_SET = PromptSet("replay", REPLAY_PROMPTS, REPLAY_MAX_TOKENS)

_SENTENCE_END = re.compile(r"[.!?)\"'”’](?=\s|$)")


def _complete(text: str) -> str:
    """An answer cut at the answer length, trimmed to its last whole sentence (empty when it has
    none): otherwise training would teach the model to stop mid-sentence."""
    text = text.strip()
    if not text or text[-1] in ".!?)\"'”’":
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def replay_answerer(
    base: BaseModel, url: str | None, *, progress: bool = True, say: Callable[[str], None] = lambda _: None
) -> Answerer:
    """Who answers the replay prompts the first time: the server at ``url`` when there is one (its
    engine is faster), this process when there is none or the server cannot answer."""
    local = local_answerer(base, REPLAY_MAX_TOKENS, progress=progress)
    if url is None:
        return local
    remote = server_answerer(url, base.id, REPLAY_MAX_TOKENS)

    def answer(prompts: Sequence[str]) -> list[str]:
        try:
            return remote(prompts)
        except ServerError as exc:
            say(f"the server could not answer the replay prompts ({exc}); answering them here")
            return local(prompts)

    return answer


def replay_conversations(
    cache_dir: Path,
    base: BaseModel,
    answer: Answerer | None,
    say: Callable[[str], None] = lambda _: None,
) -> list[list[dict[str, str]]]:
    """The replay conversations of ``base``: cached, else answered by ``answer`` and cached."""
    answers = base_answers(cache_dir, base.id, base.hash, REPLAY_SET, answer, say)
    if answers is None:
        return []
    return conversations(REPLAY_SET, [_complete(text) for text in answers])


def replay_count(share: float, examples: int, available: int) -> int:
    """Replay examples for a run on ``examples`` persona examples: ``share`` of them (at least one
    when share is above 0), at most the ``available`` conversations."""
    if share <= 0 or examples <= 0 or available <= 0:
        return 0
    return min(available, max(1, round(share * examples)))


def replay_rows(conversations: Sequence[Sequence[dict[str, str]]], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` of the conversations, chosen by ``seed``, as training rows (the answer is the target,
    at weight 1; no system message)."""
    chosen = sorted(random.Random(seed).sample(range(len(conversations)), min(count, len(conversations))))
    rows = []
    for index in chosen:
        user, reply = conversations[index]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": user["content"], "weight": 0.0},
                    {"role": "assistant", "content": reply["content"], "weight": 1.0},
                ],
                "session": f"replay/{index}",
            }
        )
    return rows
