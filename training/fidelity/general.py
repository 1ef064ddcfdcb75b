"""Forgetting: a small general conversation set, the base model's own answers to everyday prompts.

Its perplexity under the base model (before) and under base + adapter (after) shows how far training
a voice pulled the model away from what it could already do. The answers are generated once per base
model through the server and cached (:mod:`training.base_answers`); no data set is downloaded. The
prompts here are never trained on: replay (:mod:`training.replay`) has a set of its own.
"""

from __future__ import annotations

from pathlib import Path

from ..base_answers import PromptSet, base_answers, conversations, server_answerer

__all__ = ["GENERAL_PROMPTS", "general_conversations"]

GENERAL_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "How do I boil an egg?",
    "Explain what a computer virus is in simple words.",
    "What is the difference between weather and climate?",
    "Can you suggest a name for a pet goldfish?",
    "How many days are there in a leap year?",
    "Write a short thank-you note to a neighbour.",
    "Why do leaves change colour in autumn?",
    "What should I pack for a weekend hiking trip?",
    "How does a bicycle stay upright?",
    "What is a good way to start learning to cook?",
    "Summarise the story of Cinderella in two sentences.",
    "How can I save money on groceries?",
    "What is photosynthesis?",
    "Give me a simple recipe for pancakes.",
    "How do I politely decline an invitation?",
    "What are the primary colours?",
    "Why is exercise good for you?",
    "How do I write a good email subject line?",
)
GENERAL_MAX_TOKENS = 96
GENERAL_SET = PromptSet("general", GENERAL_PROMPTS, GENERAL_MAX_TOKENS)


def general_conversations(
    cache_dir: Path, base_id: str, base_hash: str, url: str | None, concurrency: int = 24
) -> list[list[dict[str, str]]]:
    """``[user prompt, base answer]`` conversations; generated through ``url`` on first use, then cached.

    With no server (``url`` is ``None``) and nothing cached, the set is empty and forgetting is not
    measured.
    """
    answerer = server_answerer(url, base_id, GENERAL_MAX_TOKENS, concurrency=concurrency) if url else None
    answers = base_answers(cache_dir, base_id, base_hash, GENERAL_SET, answerer)
    return conversations(GENERAL_SET, answers) if answers is not None else []
