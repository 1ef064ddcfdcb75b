"""Forgetting: a small general conversation set, the base model's own answers to everyday prompts.

Its perplexity under the base model (before) and under base + adapter (after) shows how far training
a voice pulled the model away from what it could already do. The answers are generated once per base
model through the server (greedy, so they are the base model's most likely answers) and cached in the
cache folder; no data set is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from store.files import atomic_write

from .generate import Ask, Sampling, System, generate

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
CACHE_FOLDER = "fidelity"


def _cache_file(cache_dir: Path, base_hash: str) -> Path:
    return Path(cache_dir) / CACHE_FOLDER / f"general-{base_hash[:16]}.json"


def general_conversations(
    cache_dir: Path, base_id: str, base_hash: str, url: str | None, concurrency: int = 24
) -> list[list[dict[str, str]]]:
    """``[user prompt, base answer]`` conversations; generated through ``url`` on first use, then cached.

    With no server (``url`` is ``None``) and nothing cached, the set is empty and forgetting is not
    measured.
    """
    path = _cache_file(cache_dir, base_hash)
    wanted = {"prompts": list(GENERAL_PROMPTS), "max_tokens": GENERAL_MAX_TOKENS}
    answers: list[str] | None = None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if {k: cached.get(k) for k in wanted} == wanted:
            answers = cached["answers"]
    except (OSError, ValueError, KeyError):
        answers = None
    if answers is None:
        if url is None:
            return []
        asks = [Ask(conversation=({"role": "user", "content": p},), seed=i) for i, p in enumerate(GENERAL_PROMPTS)]
        [replies] = generate(
            url, [(System("base", base_id), asks)], Sampling(0.0, 1.0, GENERAL_MAX_TOKENS), concurrency=concurrency
        )
        answers = [r.text for r in replies]
        atomic_write(path, json.dumps({**wanted, "base_model": base_id, "answers": answers}, indent=1))
    return [
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        for prompt, answer in zip(GENERAL_PROMPTS, answers)
        if answer.strip()
    ]
